import CurlHTTP
import Foundation
import IntilerySimulator
import Logging
import RelayCore
import Testing

/// 2024-05-01T00:00:00Z: where test time starts.
let ingestEpoch: Int64 = 1_714_521_600_000

extension TestClock {
    /// Wall time on this clock, counted from ``ingestEpoch``: what the relay's `now` and the simulator read.
    var wallMilliseconds: Int64 { ingestEpoch + Int64(now.offset / .milliseconds(1)) }
    var wallTime: Timestamp { Timestamp(millisecondsSinceEpoch: wallMilliseconds) }
    /// This clock and its wall time, as the relay's parts take them.
    var relayTime: RelayTime<TestClock> { RelayTime(clock: self) { self.wallTime } }
}

/// A fake API, a real state store in a temporary directory and a poller, all on one test clock that jumps ahead
/// whenever the relay sleeps: backoff, rate limits and poll intervals take no real time, and the simulator's
/// rate limiter and live events see the same time as the relay.
final class IngestFixture: Sendable {
    let clock = TestClock(autoAdvance: true)
    let api: FakeEventsAPI
    let store: StateStore
    let http = CurlHTTPClient()
    let directory: URL
    let limiters: APIRateLimiters<TestClock>

    var now: Timestamp { clock.wallTime }

    /// `apiClockOffset`: how far the API's clock is ahead of the relay's (negative: behind).
    init(settings: FakeEventsAPI.Settings = .init(), apiClockOffset: Int64 = 0) async throws {
        let clock = self.clock
        api = try await FakeEventsAPI.start(
            settings: settings, time: .derived { clock.wallMilliseconds + apiClockOffset })
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("relay-ingest-\(UUID().uuidString)")
        store = try StateStore.open(directory: directory.path)
        limiters = APIRateLimiters(clock: clock)
    }

    func shutdown() async throws {
        await http.shutdown()
        try await api.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }

    func source(
        name: String = "acme", startFrom: StartPosition = .earliest, lookback: Duration = .seconds(60),
        pollInterval: Duration = .seconds(1),
        pageSize: Int = 100, rateLimit: RateLimit = RateLimit(perSecond: 100, burst: 500), token: String? = nil,
        response: ResponseShapeOverrides? = nil
    ) -> SourceConfig {
        var source = SourceConfig(
            name: name, clientId: api.account.clientId, accountId: api.account.accountId, brandId: api.account.brandId,
            authToken: Secret(token ?? api.account.authToken, origin: .literal))
        source.baseURL = api.baseURL
        source.startFrom = startFrom
        source.lookback = lookback
        source.pageSize = pageSize
        source.rateLimit = rateLimit
        source.pollInterval = pollInterval
        source.response = response
        return source
    }

    static func subscription(_ name: String, include: [String] = [], exclude: [String] = [], filter: EventFilter? = nil)
        -> SubscriptionConfig
    {
        SubscriptionConfig(
            name: name, source: "acme", include: include, exclude: exclude, filter: filter,
            webhook: WebhookConfig(url: "http://127.0.0.1:9/\(name)"))
    }

    func poller(_ source: SourceConfig, _ subscriptions: [SubscriptionConfig], store: (any SourceStore)? = nil) -> Poller<TestClock> {
        let now: @Sendable () -> Timestamp = { [clock] in clock.wallTime }
        let client = EventsAPIClient(
            source: source, subscriptions: subscriptions, http: http, limiter: limiters.limiter(for: source), now: now)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return Poller(
            source: source, subscriptions: subscriptions, store: store ?? self.store, client: client, time: clock.relayTime, logger: logger)
    }

    /// The ids the API holds, in the order it pages them.
    var expectedIDs: [String] { api.log.allEvents.map(\.eventID) }
}

func withIngest<T>(
    settings: FakeEventsAPI.Settings = .init(), apiClockOffset: Int64 = 0, _ body: (IngestFixture) async throws -> T
) async throws -> T {
    let fixture = try await IngestFixture(settings: settings, apiClockOffset: apiClockOffset)
    do {
        let result = try await body(fixture)
        try await fixture.shutdown()
        return result
    } catch {
        try await fixture.shutdown()
        throw error
    }
}
