import Synchronization

/// A token bucket shared by every caller that holds it, on an injected clock. Sources that use the same API token
/// share one (the API's limit is per token); each webhook with a `rateLimit` has its own.
public final class RateLimiter<C: Clock>: Sendable where C.Duration == Duration, C: Sendable {
    private let clock: C
    private let origin: C.Instant
    private let bucket: Mutex<TokenBucket>

    /// A full bucket with `limit`.
    public init(limit: RateLimit, clock: C) {
        self.clock = clock
        origin = clock.now
        bucket = Mutex(TokenBucket(limit: limit, now: .zero))
    }

    /// Waits, if need be, until a request may go. Waiting is not failing: nothing counts it as an attempt.
    public func acquire() async throws {
        let now = origin.duration(to: clock.now)
        let wait = bucket.withLock { $0.reserve(now: now) }
        if wait > .zero { try await clock.sleep(for: wait) }
    }

    /// Waits until a request may go while leaving half the burst to ``acquire()`` callers: background reads (the
    /// settle edge) then never delay the ones that must not wait (the live edge).
    public func acquireSpare() async throws {
        while true {
            let now = origin.duration(to: clock.now)
            guard let wait = bucket.withLock({ $0.reserveIfSpare(now: now, keeping: Double($0.limit.burst / 2)) }) else { return }
            try await clock.sleep(for: wait)
        }
    }
}

/// The API rate limiters, one per distinct token. Keyed by the token in memory only; never stored or logged.
public final class APIRateLimiters<C: Clock>: Sendable where C.Duration == Duration, C: Sendable {
    private let clock: C
    private let limiters = Mutex<[String: (limit: RateLimit, limiter: RateLimiter<C>)]>([:])

    /// An empty registry on `clock`.
    public init(clock: C) { self.clock = clock }

    /// The limiter for a source's token, made on first use with that source's limit, and made anew when a reload
    /// changed the limit.
    public func limiter(for source: SourceConfig) -> RateLimiter<C> {
        limiters.withLock { limiters in
            if let existing = limiters[source.authToken.exposedValue], existing.limit == source.rateLimit { return existing.limiter }
            let limiter = RateLimiter(limit: source.rateLimit, clock: clock)
            limiters[source.authToken.exposedValue] = (source.rateLimit, limiter)
            return limiter
        }
    }
}

/// Exponential backoff with full jitter between a floor and a ceiling, as docs/configuration.md words it for webhooks: the
/// n-th retry waits a random time in [initial, min(maximum, initial × 2^(n−1))].
public struct Backoff: Sendable, Equatable {
    /// The shortest wait.
    public var initial: Duration
    /// The longest wait.
    public var maximum: Duration

    /// A backoff between `initial` and `maximum`.
    public init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The upper bound of the n-th retry's wait (n from 1).
    public func ceiling(retry n: Int) -> Duration {
        let doublings = min(max(n - 1, 0), 62)
        let factor = Double(1 << doublings)
        let scaled = initial / .seconds(1) * factor
        return min(maximum, scaled >= maximum / .seconds(1) ? maximum : .nanoseconds(Int64(scaled * 1e9)))
    }

    /// A random wait for the n-th retry.
    public func delay(retry n: Int, using random: inout some RandomNumberGenerator) -> Duration {
        let low = initial
        let high = max(ceiling(retry: n), low)
        guard high > low else { return low }
        let span = (high - low) / .nanoseconds(1)
        let fraction = Double(random.next() % 1_000_001) / 1_000_000
        return low + .nanoseconds(Int64(span * fraction))
    }
}
