import Foundation
import HTTPServer
import Synchronization

/// The Intilery Events API as its public documentation describes it, on loopback, with knobs for every way
/// the real one can behave: response shapes, rate limits, the 10,000-result window, faults and late events.
public final class FakeEventsAPI: Sendable {
    /// The account the fake API serves and the token it accepts.
    public struct Account: Sendable {
        public var clientId = "acme"
        public var accountId = "acme"
        public var brandId = "ACME"
        public var authToken = "sim-token-1234"

        /// The default account: acme/acme/ACME.
        public init() {}
    }

    /// Behaviour that tests may change while the server runs.
    public struct Settings: Sendable {
        /// The body shape of a page.
        public var shape: ResponseShape = .array
        /// The names of id, time and action fields.
        public var naming: FieldNaming = .canonical
        /// The token bucket; `nil` for no limit.
        public var rateLimit: (perSecond: Double, burst: Int)? = (100, 500)
        /// Seconds sent in `Retry-After` with a 429; `nil` sends none.
        public var retryAfterSeconds: Int? = 1
        /// Whether `start` includes events at exactly that time (the docs do not say).
        public var startInclusive = true
        /// Whether `end` includes events at exactly that time.
        public var endInclusive = false
        /// Misbehaviour.
        public var faults = SimulatorFaults()
        /// Whether pages carry a `Date` header (IMF-fixdate, whole seconds), as HTTP servers do.
        public var sendsDate = true

        /// The defaults: a top-level array, canonical fields, the documented 100/s burst 500, no faults.
        public init() {}
    }

    /// What the server has answered, by status.
    public struct Counts: Sendable, Equatable {
        public var requests = 0
        public var pages = 0
        public var eventsServed = 0
        public var byStatus: [Int: Int] = [:]
        /// The most requests held at once, each from its arrival until its answer is due (`latency` later): 1 for a
        /// client that asks only once it has its last answer, more for one that asks ahead.
        public var mostAtOnce = 0
        /// Requests that reached the rate limiter, 429s included: what a rate-limit test compares against.
        public var rateLimited: Int { byStatus[429] ?? 0 }
    }

    private struct State {
        var settings: Settings
        var counts = Counts()
        var bucket: SimulatorBucket?
        var random = SeededRandom(seed: 7)
        var queries: [String] = []
        var recordQueries = false
        /// When each request held now is answered.
        var answersDue: [ContinuousClock.Instant] = []
    }

    /// The events the API serves.
    public let log: EventLog
    /// The account it serves.
    public let account: Account
    private let time: SimulatorTime
    private let state: Mutex<State>
    private let server: HTTPServer

    /// `http://127.0.0.1:port`.
    public var baseURL: String { server.baseURL }
    /// The port bound.
    public var port: Int { server.port }
    /// The URL to poll, as a source's `baseURL` plus the path the relay builds.
    public var eventsURL: String {
        "\(baseURL)/track/\(account.clientId)/\(account.accountId)/\(account.brandId)/v1/events"
    }
    /// Connections accepted so far.
    public var acceptedConnections: Int { server.acceptedConnections }

    private init(log: EventLog, account: Account, time: SimulatorTime, state: State, server: HTTPServer) {
        self.log = log
        self.account = account
        self.time = time
        self.state = Mutex(state)
        self.server = server
    }

    /// Starts serving on `host:port` (0: any free port).
    public static func start(
        host: String = "127.0.0.1", port: Int = 0, account: Account = Account(), settings: Settings = Settings(),
        time: SimulatorTime = .system(), threads: Int = 1
    ) async throws -> FakeEventsAPI {
        let log = EventLog(time: time)
        let state = State(settings: settings, bucket: settings.rateLimit.map { SimulatorBucket($0, now: time.now) })
        let handlerBox = HandlerBox()
        let server = try await HTTPServer.start(
            HTTPServer.Configuration(host: host, port: port, maxRequestBodyBytes: 1 << 20, threads: threads)
        ) { request in handlerBox.handle(request) }
        let api = FakeEventsAPI(log: log, account: account, time: time, state: state, server: server)
        handlerBox.api.withLock { $0 = api }
        return api
    }

    /// Stops the server.
    public func shutdown() async throws { try await server.shutdown() }

    /// Changes behaviour; a new rate limit starts with a full bucket.
    public func update(_ change: (inout Settings) -> Void) {
        let now = time.now
        state.withLock { state in
            let before = state.settings.rateLimit
            change(&state.settings)
            let after = state.settings.rateLimit
            if before?.perSecond != after?.perSecond || before?.burst != after?.burst {
                state.bucket = state.settings.rateLimit.map { SimulatorBucket($0, now: now) }
            }
        }
    }

    /// What has been served so far.
    public var counts: Counts { state.withLock { $0.counts } }

    /// Starts or stops keeping every request's query string, for tests that check what the relay asked for.
    public func recordQueries(_ on: Bool) { state.withLock { $0.recordQueries = on } }

    /// The query strings kept since ``recordQueries(_:)`` was turned on.
    public var queries: [String] { state.withLock { $0.queries } }

    // MARK: - Handling

    private enum Decision {
        case reply(HTTPServerReply)
        case page(EventsQuery, Settings, fault: Fault?)
    }

    private enum Fault { case malformed, truncated }

    fileprivate func handle(_ request: HTTPServerRequest) -> HTTPServerReply {
        let now = time.now
        let decision = state.withLock { state -> Decision in
            state.counts.requests += 1
            let arrived = ContinuousClock.now
            state.answersDue.removeAll { $0 <= arrived }
            state.answersDue.append(arrived + state.settings.faults.latency)
            state.counts.mostAtOnce = max(state.counts.mostAtOnce, state.answersDue.count)
            if state.recordQueries { state.queries.append(String(request.uri.drop { $0 != "?" }.dropFirst())) }
            let decision = decide(request, state: &state, now: now)
            if case .reply(let reply) = decision, case .respond(let status, _, _, _) = reply {
                state.counts.byStatus[status, default: 0] += 1
            }
            return decision
        }
        guard case .page(let query, let settings, let fault) = decision else {
            if case .reply(let reply) = decision { return reply }
            return .close
        }
        let (events, total) = log.page(query)
        let body = EventRenderer(naming: settings.naming, shape: settings.shape).page(events, total: total)
        state.withLock { state in
            state.counts.byStatus[200, default: 0] += 1
            state.counts.pages += 1
            state.counts.eventsServed += fault == nil ? events.count : 0
        }
        var headers = [(name: "content-type", value: "application/json")]
        if settings.sendsDate { headers.append((name: "date", value: HTTPDate.format(milliseconds: now))) }
        switch fault {
        case .malformed:
            return .respond(status: 200, headers: headers, body: Array(body.prefix(body.count / 2)) + Array("<html>".utf8),
                            after: settings.faults.latency)
        case .truncated:
            return .truncate(status: 200, headers: headers, body: body, sentBytes: body.count / 2)
        case nil:
            return .respond(status: 200, headers: headers, body: body, after: settings.faults.latency)
        }
    }

    private func decide(_ request: HTTPServerRequest, state: inout State, now: Int64) -> Decision {
        let settings = state.settings
        let segments = request.path.split(separator: "/", omittingEmptySubsequences: true)
        guard request.method == "GET", segments.count == 6, segments[0] == "track", segments[4] == "v1",
            segments[5] == "events"
        else { return .reply(Self.error(404, "not found")) }
        guard request.header("auth-token") == account.authToken else {
            return .reply(Self.error(401, "missing or invalid auth-token"))
        }
        guard segments[1] == account.clientId, segments[2] == account.accountId, segments[3] == account.brandId else {
            return .reply(Self.error(404, "no such client, account or brand"))
        }
        guard let contentType = request.header("content-type"),
            contentType.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased() == "application/json"
        else { return .reply(Self.error(400, "content-type: application/json is required")) }
        if state.bucket != nil, !state.bucket!.take(now: now) {
            var headers = [(name: "content-type", value: "application/json")]
            if let seconds = settings.retryAfterSeconds { headers.append(("retry-after", String(seconds))) }
            return .reply(.respond(status: 429, headers: headers, body: Array(#"{"error":"limit exceeded"}"#.utf8)))
        }
        let faults = settings.faults
        let roll = Double(state.random.next() % 1_000_000) / 1_000_000
        if roll < faults.internalError {
            return .reply(Self.error(500, "internal error", after: faults.latency))
        }
        if roll < faults.internalError + faults.unavailable {
            return .reply(Self.error(503, "service unavailable", after: faults.latency))
        }
        var fault: Fault?
        let contentRoll = Double(state.random.next() % 1_000_000) / 1_000_000
        if contentRoll < faults.malformed {
            fault = .malformed
        } else if contentRoll < faults.malformed + faults.truncated {
            fault = .truncated
        }
        switch EventsQuery.parse(request.queryItems) {
        case .failure(let error):
            return .reply(Self.error(400, error.message))
        case .success(var query):
            query.startInclusive = settings.startInclusive
            query.endInclusive = settings.endInclusive
            return .page(query, settings, fault: fault)
        }
    }

    private static func error(_ status: Int, _ message: String, after delay: Duration = .zero) -> HTTPServerReply {
        var body = #"{"error":""#
        body += message.replacingOccurrences(of: "\"", with: "'")
        body += #""}"#
        return .respond(status: status, headers: [("content-type", "application/json")], body: Array(body.utf8), after: delay)
    }
}

/// Lets the server's handler reach the API object created after the server started.
private final class HandlerBox: Sendable {
    let api = Mutex<FakeEventsAPI?>(nil)

    func handle(_ request: HTTPServerRequest) -> HTTPServerReply {
        guard let api = api.withLock({ $0 }) else { return .text("starting", status: 503) }
        return api.handle(request)
    }
}

/// The simulator's own token bucket, in milliseconds. Deliberately not the relay's: a test oracle that shared the
/// relay's code would share its bugs.
struct SimulatorBucket: Sendable {
    let perSecond: Double
    let burst: Double
    var tokens: Double
    var updatedAt: Int64

    init(_ limit: (perSecond: Double, burst: Int), now: Int64) {
        perSecond = limit.perSecond
        burst = Double(limit.burst)
        tokens = Double(limit.burst)
        updatedAt = now
    }

    mutating func take(now: Int64) -> Bool {
        if now > updatedAt {
            tokens = min(burst, tokens + Double(now - updatedAt) * perSecond / 1000)
            updatedAt = now
        }
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}

/// `Date` header values. The simulator's own formatter, not the relay's parser: the oracle shares no code.
enum HTTPDate {
    private static let weekdays = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `Sun, 06 Nov 1994 08:49:37 GMT` for a time in milliseconds since the epoch (rounded down to the second).
    static func format(milliseconds: Int64) -> String {
        let seconds = milliseconds >= 0 ? milliseconds / 1000 : (milliseconds - 999) / 1000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        var iso: [UInt8] = []
        appendISO(days * 86_400_000, into: &iso, fraction: 0, zulu: true)
        let date = String(decoding: iso, as: UTF8.self)  // yyyy-mm-ddT00:00:00Z
        let parts = date.prefix(10).split(separator: "-")
        let weekday = weekdays[Int(((days % 7) + 7) % 7)]
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let time = "\(two(secondOfDay / 3600)):\(two(secondOfDay / 60 % 60)):\(two(secondOfDay % 60))"
        return "\(weekday), \(parts[2]) \(months[Int(parts[1])! - 1]) \(parts[0]) \(time) GMT"
    }
}
