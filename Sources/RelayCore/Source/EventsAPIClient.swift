import CurlHTTP

/// Reads one page of a source's events: builds the query, waits for the token's rate limit, sends `auth-token`
/// and `content-type`, and classifies what came back. Retrying is the poller's business.
public struct EventsAPIClient<C: Clock>: Sendable where C.Duration == Duration, C: Sendable {
    /// What one request came to.
    public enum Outcome: Sendable {
        /// A page that decoded, and the API's time when it read it (see ``apiNow(date:sentAt:receivedAt:)``).
        case page(EventPageDecoder.Page, apiNow: Timestamp)
        /// Nothing usable; wait and ask again. `retryAfter` is the server's own word, when it gave one.
        case failed(Failure)
    }

    /// A failed request, kept free of the token and of response bodies beyond a short snippet.
    public struct Failure: Sendable, CustomStringConvertible {
        /// What kind of failure, for the backoff policy and metrics.
        public enum Kind: String, Sendable {
            case rateLimited = "rate_limited"
            case unauthorized
            case rejected
            case serverError = "server_error"
            case transport
            case malformed
        }
        public var kind: Kind
        public var status: Int?
        public var retryAfter: Duration?
        public var detail: String

        public var description: String {
            (status.map { "HTTP \($0): " } ?? "") + detail
        }
    }

    /// Up to 16 MiB per page: a hundred events are far smaller, so more means something is wrong.
    public static var maximumBodyBytes: Int { 16 << 20 }

    private let source: SourceConfig
    private let http: CurlHTTPClient
    private let limiter: RateLimiter<C>
    private let decoder: EventPageDecoder
    private let filter: (include: String?, exclude: [String])
    private let now: @Sendable () -> Timestamp

    /// A client for `source`, asking the API to pre-filter per `subscriptions`.
    public init(
        source: SourceConfig, subscriptions: [SubscriptionConfig], http: CurlHTTPClient, limiter: RateLimiter<C>,
        now: @escaping @Sendable () -> Timestamp
    ) {
        self.source = source
        self.http = http
        self.limiter = limiter
        self.decoder = EventPageDecoder(overrides: source.response)
        self.filter = Router.serverSideFilter(for: subscriptions)
        self.now = now
    }

    /// The URL for a page of events from `start` on (before `end`, when given), ascending.
    public func url(start: Timestamp, end: Timestamp? = nil, from: Int) -> String {
        var url = source.eventsURL + "?sort=asc&size=\(source.pageSize)&from=\(from)&start=\(start.iso8601.queryValueEncoded)"
        if let end { url += "&end=\(end.iso8601.queryValueEncoded)" }
        if let include = filter.include { url += "&include=\(include.queryValueEncoded)" }
        if !filter.exclude.isEmpty { url += "&exclude=" + filter.exclude.map(\.queryValueEncoded).joined(separator: ",") }
        return url
    }

    /// Fetches one page. A `background` request waits for spare rate-limit tokens, so it never delays the others.
    public func fetch(start: Timestamp, end: Timestamp? = nil, from: Int, background: Bool = false) async throws -> Outcome {
        if background { try await limiter.acquireSpare() } else { try await limiter.acquire() }
        let request = HTTPRequest(
            url: url(start: start, end: end, from: from),
            headers: ["content-type": "application/json", "auth-token": source.authToken.exposedValue],
            connectTimeout: .seconds(10), timeout: .seconds(30),
            responseBodyLimit: .failBeyond(Self.maximumBodyBytes))
        let response: HTTPResponse
        let sentAt = now()
        do {
            response = try await http.execute(request)
        } catch {
            if error.code == .cancelled { throw CancellationError() }
            return .failed(Failure(kind: .transport, detail: "\(error)"))
        }
        switch response.status {
        case 200..<300:
            do {
                let page = try decoder.decode(response.body)
                return .page(page, apiNow: Self.apiNow(date: response.headers["date"], sentAt: sentAt, receivedAt: now()))
            } catch {
                return .failed(Failure(kind: .malformed, status: response.status, detail: error.reason))
            }
        case 429:
            return .failed(
                Failure(kind: .rateLimited, status: 429, retryAfter: RetryAfter.parse(response.headers["retry-after"], now: now()),
                        detail: "rate limit exceeded"))
        case 401, 403:
            return .failed(Failure(kind: .unauthorized, status: response.status, detail: "the API refused the auth token"))
        case 500..<600:
            return .failed(
                Failure(kind: .serverError, status: response.status,
                        retryAfter: RetryAfter.parse(response.headers["retry-after"], now: now()), detail: "server error"))
        default:
            let snippet = String(decoding: response.body.prefix(200), as: UTF8.self)
            return .failed(Failure(kind: .rejected, status: response.status, detail: "request rejected: \(snippet)"))
        }
    }

    /// The API's clock when it read the page, as the live cursor may trust it: when the request was sent, since the
    /// API read the page after that, however long its answer then took to come back (the answer's arrival would
    /// carry the cursor past events the API had not reached yet). The `Date` header, which has whole seconds, checks
    /// it: a relay clock ahead of the `Date`'s second gets the `Date`; one behind the `Date` (the answer arrived before
    /// the second the API stamped on it) gets the `Date` too. Without a readable `Date`, when it was sent. A relay
    /// clock ahead of the API's by less than a second is not seen (the `Date` cannot tell), and the settle edge reads
    /// whatever that hid.
    public static func apiNow(date: String?, sentAt: Timestamp, receivedAt: Timestamp) -> Timestamp {
        guard let date, let second = RetryAfter.httpDate(date), second.isPlaceable else { return sentAt }
        if sentAt > second.advanced(by: .milliseconds(999)) { return second }
        // The request went within the `Date`'s second or before it, and the answer came once that second had begun.
        if receivedAt >= second { return sentAt }
        return second
    }
}
