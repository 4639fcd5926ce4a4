import Logging
import PostgresNIO
import RelayCore
import RelayPostgres
import Testing

/// Pages committed under a source's lease, against a real PostgreSQL.
@Suite(.enabled(if: TestDatabase.available, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
struct PostgresIngestTests {
    static let now = PostgresDeliveriesTests.now

    func withIngest(_ body: (PostgresIngest, PostgresLeases, PostgresClient, String) async throws -> Void) async throws {
        try await TestDatabase.withClient { client, schema in
            try await PostgresSchema.migrate(TestDatabase.database(client, schema))
            try await body(
                PostgresIngest(TestDatabase.database(client, schema)), PostgresLeases(TestDatabase.database(client, schema)),
                client, schema)
        }
    }

    /// `e0` for a, `e1` for a and b, `e2` for nobody, `e3` for b.
    static func page() -> [RoutedEvent] {
        let events = PostgresDeliveriesTests.events(4)
        return zip(events, [["a"], ["a", "b"], [], ["b"]]).map { RoutedEvent(event: $0, subscriptions: $1) }
    }

    static func at(_ offset: Int64) -> Timestamp { Timestamp(millisecondsSinceEpoch: now.millisecondsSinceEpoch + offset) }

    @Test func aPageIsQueuedOnceAndTheMarksOnlyMoveForward() async throws {
        try await withIngest { ingest, leases, client, schema in
            let lease = try #require(try await leases.acquire("token", for: "relay-1", ttl: .seconds(300)))
            let first = try await ingest.enqueue(
                source: "acme", events: Self.page(), advance: MarkAdvance(live: Self.at(0), settled: Self.at(-5_000)), by: lease, now: Self.now)
            #expect(first.newEvents == 4 && first.duplicates == 0 && first.queued == 4)
            // Read again (a lookback, a window restart): nothing queued twice, and marks never move back.
            let again = try await ingest.enqueue(
                source: "acme", events: Self.page(), advance: MarkAdvance(live: Self.at(-1_000), settled: Self.at(-9_000)), by: lease,
                now: Self.now)
            #expect(again.newEvents == 0 && again.duplicates == 4 && again.queued == 0)
            let marks = try #require(try await ingest.marks(of: "acme"))
            #expect(marks.live == Self.at(0) && marks.settled == Self.at(-5_000))
            // The settle mark moves only from where the walk began.
            _ = try await ingest.enqueue(
                source: "acme", events: [], advance: MarkAdvance(live: Self.at(10), settled: Self.at(-1_000), settledOnlyFrom: Self.at(-4_000)),
                by: lease, now: Self.now)
            #expect(try await ingest.marks(of: "acme")?.settled == Self.at(-5_000), "the walk began after the mark: a gap, not settled")
            _ = try await ingest.enqueue(
                source: "acme", events: [], advance: MarkAdvance(live: Self.at(10), settled: Self.at(-1_000), settledOnlyFrom: Self.at(-6_000)),
                by: lease, now: Self.now)
            #expect(try await ingest.marks(of: "acme")?.settled == Self.at(-1_000))

            let deliveries = PostgresDeliveries(TestDatabase.database(client, schema))
            let forA = try await deliveries.claim("a", requests: 10, batchSize: 1, by: "relay-1", visibility: .seconds(300))
            let forB = try await deliveries.claim("b", requests: 10, batchSize: 1, by: "relay-1", visibility: .seconds(300))
            #expect(forA.map { $0.deliveries[0].eventID } == ["e0", "e1"])
            #expect(forB.map { $0.deliveries[0].eventID } == ["e1", "e3"])
            #expect(try await PostgresDeliveriesTests.rowCount("event", schema: schema, client) == 3, "e2 is only remembered as seen")
            #expect(try await ingest.pruneSeen(source: "acme", before: Self.at(-100_000 + 2)) == 2)
        }
    }

    @Test func aFormerHolderCommitsNothing() async throws {
        try await withIngest { ingest, leases, client, schema in
            let paused = try #require(try await leases.acquire("token", for: "relay-1", ttl: .seconds(300)))
            _ = try await ingest.enqueue(source: "acme", events: [], advance: MarkAdvance(live: Self.at(0)), by: paused, now: Self.now)
            // relay-1 stalls past its lease; relay-2 takes the source over and reads the same page.
            try await TestDatabase.expire("token", schema: schema, client)
            let holder = try #require(try await leases.acquire("token", for: "relay-2", ttl: .seconds(300)))
            await #expect(throws: LeaseLost(key: "token", epoch: paused.epoch)) {
                try await ingest.enqueue(source: "acme", events: Self.page(), advance: MarkAdvance(live: Self.at(500)), by: paused, now: Self.now)
            }
            #expect(try await PostgresDeliveriesTests.rowCount("delivery", schema: schema, client) == 0)
            #expect(try await PostgresDeliveriesTests.rowCount("seen", schema: schema, client) == 0)
            #expect(try await ingest.marks(of: "acme")?.live == Self.at(0))
            let taken = try await ingest.enqueue(source: "acme", events: Self.page(), advance: MarkAdvance(live: Self.at(100)), by: holder, now: Self.now)
            #expect(taken.queued == 4)
            #expect(try await ingest.marks(of: "acme")?.live == Self.at(100))
        }
    }
}
