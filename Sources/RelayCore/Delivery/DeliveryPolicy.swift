import CurlHTTP

/// The retry rules of docs/configuration.md (Webhooks) as a pure function: what to do after one attempt.
public struct DeliveryPolicy: Sendable {
    /// The subscription's retry settings.
    public var retry: RetryPolicy

    /// A policy with these settings.
    public init(retry: RetryPolicy) { self.retry = retry }

    /// Statuses worth retrying: 408, 425, 429 and 5xx. Anything else that is not 2xx, 3xx included, is final.
    public static func isRetryable(status: Int) -> Bool {
        status == 408 || status == 425 || status == 429 || (500..<600).contains(status)
    }

    /// The decision after an attempt that made `attempts` in all, for deliveries queued at `queuedAt`.
    ///
    /// A retry waits a random time in [initialBackoff, min(maxBackoff, initialBackoff × 2^(n−1))], or what
    /// `Retry-After` says on a 429 or 503, in full up to an hour. Past `maxAttempts` the deliveries are dead
    /// letters; a retry that would fall past `maxAge` (counted from when the event was queued, so that rows held
    /// back by an open breaker age too) is moved to exactly `maxAge`, so that the last try happens at the deadline
    /// and a failure there is final.
    public func decide(
        status: Int?, transportError: CurlHTTPError?, retryAfter: Duration?, attempts: Int, queuedAt: Timestamp,
        now: Timestamp, random: inout some RandomNumberGenerator
    ) -> DeliveryOutcome.Decision {
        if let status, (200..<300).contains(status) { return .delivered }
        if let status, !Self.isRetryable(status: status) {
            return .deadLetter(reason: (300..<400).contains(status) ? "redirect_not_followed" : "http_\(status)")
        }
        if let transportError, !transportError.isTransient {
            return .deadLetter(reason: transportError.shortDescription)
        }
        let failure = status.map { "http_\($0)" } ?? transportError?.shortDescription ?? "failed"
        if attempts >= retry.maxAttempts { return .deadLetter(reason: "max_attempts (last: \(failure))") }
        let deadline = queuedAt.advanced(by: retry.maxAge)
        if now >= deadline { return .deadLetter(reason: "max_age (last: \(failure))") }
        var wait = Backoff(initial: retry.initialBackoff, maximum: retry.maxBackoff).delay(retry: attempts, using: &random)
        if let retryAfter, status == 429 || status == 503 { wait = min(retryAfter, .seconds(3600)) }
        return .retry(at: min(now.advanced(by: wait), deadline))
    }
}
