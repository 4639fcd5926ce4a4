import Foundation
import IntilerySimulator
import Logging
import PostgresNIO
import RelayCore
import RelayPostgres
import Testing

/// A store the catch-up edge writes to, and a receiver that takes everything queued for a subscription (what it
/// got, in order: an event queued twice shows up twice). SQLite always; PostgreSQL under `scripts/with-postgres` (as
/// `make test` runs), in a schema of its own with this instance holding the source's lease.
struct CursorStore {
    enum Kind: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case sqlite, postgres
        static var available: [Kind] { socket != nil ? allCases : [.sqlite] }
        var testDescription: String { rawValue }
    }

    static let socket = ProcessInfo.processInfo.environment["RELAY_TEST_POSTGRES_SOCKET"]

    let store: any SourceStore & SubscriptionCursorStore
    let take: (String, Timestamp) async throws -> [String]

    static func with(_ kind: Kind, _ fixture: IngestFixture, _ body: (CursorStore) async throws -> Void) async throws {
        switch kind {
        case .sqlite:
            let store = fixture.store
            try await body(CursorStore(store: store) { subscription, now in
                let rows = try await store.deliveries(
                    subscription: subscription, due: .init(millisecondsSinceEpoch: .max), limit: 1_000_000, strict: false, excluding: [])
                try await store.record(rows.map { DeliveryOutcome(deliveries: [$0], decision: .delivered, attemptedAt: now) })
                return rows.map(\.eventID)
            })
        case .postgres:
            let configuration = PostgresClient.Configuration(unixSocketPath: try #require(socket), username: "relay", password: nil, database: "postgres")
            let client = PostgresClient(configuration: configuration, backgroundLogger: Logger(label: "test-postgres"))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await client.run() }
                defer { group.cancelAll() }
                let schema = "cursors_" + UUID().uuidString.prefix(8).lowercased()
                let database = RelayDatabase(client: client, schema: schema, logger: Logger(label: "test"))
                try await PostgresSchema.migrate(database)
                let store = PostgresSourceStore(database)
                let lease = try #require(
                    try await PostgresLeases(database).acquire(PostgresSourceStore.leaseKey(of: "acme"), for: "relay-1", ttl: .seconds(3600)))
                store.hold(lease, for: "acme")
                try await body(CursorStore(store: store) { subscription, _ in
                    // Everything queued, delivered at once, in one statement: claiming and recording each request
                    // (tested elsewhere) would make this test about the delivery path's speed.
                    let rows = try await client.query(
                        """
                        WITH taken AS (DELETE FROM \(unescaped: schema).delivery WHERE subscription = \(subscription) RETURNING event, event_time),
                        released AS (
                            UPDATE \(unescaped: schema).event e SET pending = e.pending - 1 FROM taken WHERE e.id = taken.event RETURNING e.id, e.event_id)
                        SELECT released.event_id FROM released JOIN taken ON taken.event = released.id ORDER BY taken.event_time, released.id
                        """)
                    var taken: [String] = []
                    for try await id in rows.decode(String.self) { taken.append(id) }
                    try await client.query("DELETE FROM \(unescaped: schema).event WHERE pending <= 0")
                    return taken
                })
            }
        }
    }
}

/// Each subscription keeps its own place (docs/architecture.md, "Subscription cursors"): a new one backfills from `startFrom`
/// and joins the shared poll; a full queue falls behind and catches up once drained. Every event reaches each
/// subscription once, with live and late events arriving throughout. On the test clock against the fake API.
@Suite struct SubscriptionCursorTests {
    /// What receivers got, in order: rows are taken out of the queue as delivered, so an event queued twice shows
    /// up twice.
    final class Deliveries: @unchecked Sendable {
        var ids: [String: [String]] = [:]
    }

    /// All three edges once a second, as `run()` does, taking out what `draining` have queued after each pass.
    func poll(
        _ poller: Poller<TestClock>, _ fixture: IngestFixture, _ store: CursorStore, seconds: Int, draining: [String], into deliveries: Deliveries
    ) async throws {
        for _ in 0..<seconds {
            try await poller.pollLive()
            try await poller.settle()
            try await poller.catchUp()
            try await store.store.pruneSeen(source: poller.sourceConfig.name)
            for name in draining { deliveries.ids[name, default: []] += try await store.take(name, fixture.now) }
            fixture.clock.advance(by: .seconds(1))
        }
    }

    static func subscription(_ name: String, startFrom: StartPosition = .now, maxQueued: Int = 1_000_000) -> SubscriptionConfig {
        var subscription = IngestFixture.subscription(name)
        subscription.startFrom = startFrom
        subscription.webhook.maxQueued = maxQueued
        return subscription
    }

    static func expectEachOnce(_ delivered: [String], _ expected: [String], _ name: String, sourceLocation: SourceLocation = #_sourceLocation) {
        var counts: [String: Int] = [:]
        for id in delivered { counts[id, default: 0] += 1 }
        let repeated = counts.filter { $0.value > 1 }
        #expect(repeated.count == 0, "\(name): \(repeated.count) events twice, e.g. \(repeated.prefix(3))", sourceLocation: sourceLocation)
        let missing = Set(expected).subtracting(counts.keys)
        #expect(missing.count == 0, "\(name): \(missing.count) of \(expected.count) events missing, e.g. \(missing.prefix(3))", sourceLocation: sourceLocation)
        let extra = Set(counts.keys).subtracting(expected)
        #expect(extra.count == 0, "\(name): \(extra.count) events it should not have, e.g. \(extra.prefix(3))", sourceLocation: sourceLocation)
    }

    /// With a lookback of 0 there is no settle edge, and the marks move with every live poll: it must still join.
    @Test(arguments: CursorStore.Kind.available, [60, 0])
    func aNewSubscriptionBackfillsFromStartFromThenJoinsTheSharedPollGettingEachEventOnce(_ kind: CursorStore.Kind, lookbackSeconds: Int) async throws {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = nil
        try await withIngest(settings: settings) { fixture in try await CursorStore.with(kind, fixture) { cursors in
            let store = cursors.store
            let start = fixture.now.millisecondsSinceEpoch
            fixture.api.log.addBacklog(count: 3_000, from: start - 7_200_000, to: start)
            let late = lookbackSeconds > 0 ? EventLog.LateVisibility(fraction: 0.2, delay: .seconds(20)) : nil
            fixture.api.log.startLiveTraffic(perSecond: 40, late: late)
            let source = fixture.source(startFrom: .now, lookback: .seconds(Int64(lookbackSeconds)))
            let existing = Self.subscription("existing")
            _ = try await store.registerSubscriptions([existing], now: fixture.now)
            let deliveries = Deliveries()
            try await poll(fixture.poller(source, [existing], store: store), fixture, cursors, seconds: 90, draining: ["existing"], into: deliveries)
            let requestsBefore = fixture.api.counts.requests

            // Added with startFrom an hour back, as a reload would: registered first, then a poller for both.
            let since = Timestamp(millisecondsSinceEpoch: fixture.now.millisecondsSinceEpoch - 3_600_000)
            let added = Self.subscription("added", startFrom: .time(since))
            let behind = try await store.registerSubscriptions([existing, added], now: fixture.now)
            #expect(behind.map(\.subscription) == ["added"])
            let poller = fixture.poller(source, [existing, added], store: store)
            try await poll(poller, fixture, cursors, seconds: 120, draining: ["existing", "added"], into: deliveries)
            #expect(try await store.subscriptionCursor("added")?.state == .current)
            fixture.api.log.stopLiveTraffic()
            try await poll(poller, fixture, cursors, seconds: 100, draining: ["existing", "added"], into: deliveries)

            let events = fixture.api.log.allEvents
            Self.expectEachOnce(deliveries.ids["added"] ?? [], events.filter { $0.timestamp >= since.millisecondsSinceEpoch }.map(\.eventID), "added")
            // The existing one started at "now": the backlog before it is not its business.
            Self.expectEachOnce(deliveries.ids["existing"] ?? [], events.filter { $0.timestamp >= start }.map(\.eventID), "existing")
            // The backfill read an hour once, in pages: not a second shared poll.
            let requests = fixture.api.counts.requests - requestsBefore
            #expect(requests < 220 * 3, "\(requests) requests")
        } }
    }

    @Test(arguments: CursorStore.Kind.available)
    func aFullQueueFallsBehindKeepsItsPlaceAndCatchesUpOnceDrainedLosingNothing(_ kind: CursorStore.Kind) async throws {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = nil
        try await withIngest(settings: settings) { fixture in try await CursorStore.with(kind, fixture) { cursors in
            let store = cursors.store
            fixture.api.log.startLiveTraffic(perSecond: 30, late: EventLog.LateVisibility(fraction: 0.1, delay: .seconds(10)))
            let source = fixture.source(startFrom: .now, lookback: .seconds(30))
            let healthy = Self.subscription("healthy")
            let slow = Self.subscription("slow", maxQueued: 200)
            _ = try await store.registerSubscriptions([healthy, slow], now: fixture.now)
            let poller = fixture.poller(source, [healthy, slow], store: store)
            let deliveries = Deliveries()

            // "slow" receives nothing for two minutes: its queue fills, and it falls behind.
            var deepest = 0
            for _ in 0..<12 {
                try await poll(poller, fixture, cursors, seconds: 10, draining: ["healthy"], into: deliveries)
                deepest = max(deepest, try await store.queueDepth("slow"))
            }
            let cursor = try #require(try await store.subscriptionCursor("slow"))
            #expect(cursor.state == .behind && cursor.reason == .queueFull)
            // Late events before its place still reach it, a few over the bound.
            #expect(deepest >= 200 && deepest < 230, "\(deepest)")

            // Its receiver comes back: it drains, catches up from the API and joins the shared poll.
            try await poll(poller, fixture, cursors, seconds: 120, draining: ["healthy", "slow"], into: deliveries)
            #expect(try await store.subscriptionCursor("slow")?.state == .current)
            fixture.api.log.stopLiveTraffic()
            try await poll(poller, fixture, cursors, seconds: 80, draining: ["healthy", "slow"], into: deliveries)

            let ids = fixture.api.log.allEvents.map(\.eventID)
            Self.expectEachOnce(deliveries.ids["healthy"] ?? [], ids, "healthy")
            Self.expectEachOnce(deliveries.ids["slow"] ?? [], ids, "slow")
        } }
    }
}
