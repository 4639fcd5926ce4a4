import Logging
import PostgresNIO
import RelayCore
import RelayPostgres
import Testing

/// What `status` reads of a shared store, against a real PostgreSQL.
@Suite(.enabled(if: TestDatabase.available, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
struct PostgresStatusTests {

    @Test func showsWhoHoldsEachSourceAndWhatEachInstanceHasOut() async throws {
        try await TestDatabase.withClient { client, schema in
            try await PostgresSchema.migrate(TestDatabase.database(client, schema))
            let status = PostgresStatus(TestDatabase.database(client, schema))
            let leases = PostgresLeases(TestDatabase.database(client, schema))
            let queue = PostgresDeliveries(TestDatabase.database(client, schema))
            _ = try #require(try await leases.acquire("acme-token", for: "relay-1", ttl: .seconds(300)))
            _ = try #require(try await leases.acquire("other-token", for: "relay-2", ttl: .seconds(300)))
            try await TestDatabase.expire("other-token", schema: schema, client)
            let holders = try await status.holders()
            #expect(holders.map(\.key) == ["acme-token", "other-token"])
            #expect(holders[0].holder == "relay-1" && holders[0].epoch == 1)
            #expect(holders[0].expiresIn.map { $0 > .zero && $0 <= .seconds(300) } == true)
            #expect(holders[1].expiresIn == nil, "expired: nobody polls it until it is taken")

            try await queue.queue(PostgresDeliveriesTests.events(10), source: "acme", for: ["hook", "batched"], now: PostgresDeliveriesTests.now)
            _ = try await queue.claim("hook", requests: 3, batchSize: 1, by: "relay-1", visibility: .seconds(300))
            _ = try await queue.claim("hook", requests: 2, batchSize: 1, by: "relay-2", visibility: .seconds(300))
            _ = try await queue.claim("batched", requests: 1, batchSize: 4, by: "relay-2", visibility: .seconds(300))
            #expect(
                try await status.inFlight() == [
                    .init(instance: "relay-1", subscription: "hook", requests: 3, deliveries: 3),
                    .init(instance: "relay-2", subscription: "batched", requests: 1, deliveries: 4),
                    .init(instance: "relay-2", subscription: "hook", requests: 2, deliveries: 2),
                ])
            // Timed-out claims are out no longer: their rows are anyone's.
            try await PostgresDeliveriesTests.timeOut("batched", schema: schema, client)
            #expect(try await status.inFlight().map(\.subscription) == ["hook", "hook"])
            #expect(try await status.queueDepths() == ["hook": 10, "batched": 10])
            let gauges = try await status.queueGauges()
            #expect(gauges.keys.sorted() == ["batched", "hook"])
            #expect(gauges["hook"]?.pending == 10 && gauges["hook"]?.deadLetters == 0 && gauges["hook"]?.paused == false)
            #expect(gauges["hook"]?.oldestEventTime == PostgresDeliveriesTests.events(1)[0].time)
        }
    }

    /// The metrics page's queue gauges come from one snapshot: while deliveries move to the dead letters one
    /// by one, every read counts each delivery in its queue or its dead letters, never both (seen on CI when
    /// the two were separate queries: 32 queued beside 20 dead letters of 50 events).
    @Test func queueGaugesAddUpWhileDeliveriesAreDeadLettered() async throws {
        try await TestDatabase.withClient { client, schema in
            try await PostgresSchema.migrate(TestDatabase.database(client, schema))
            let status = PostgresStatus(TestDatabase.database(client, schema))
            let queue = PostgresDeliveries(TestDatabase.database(client, schema))
            let total = 60
            try await queue.queue(PostgresDeliveriesTests.events(total), source: "acme", for: ["hook"], now: PostgresDeliveriesTests.now)
            let claimed = try await queue.claim("hook", requests: total, batchSize: 1, by: "relay-1", visibility: .seconds(300))
            try #require(claimed.count == total)
            let mover = Task {
                for request in claimed {
                    _ = try await queue.record(
                        [PostgresDeliveriesTests.outcome(request, .deadLetter(reason: "http_400"), status: 400)], now: PostgresDeliveriesTests.now)
                }
            }
            var reads: [(pending: Int, deadLetters: Int)] = []
            repeat {
                let hook = try await status.queueGauges()["hook"] ?? .init()
                reads.append((hook.pending, hook.deadLetters))
            } while reads.last!.deadLetters < total
            try await mover.value
            #expect(reads.count > 2, "the reads overlapped the moves")
            let wrong = reads.filter { $0.pending + $0.deadLetters != total }
            #expect(wrong.isEmpty, "\(wrong.count) of \(reads.count) reads did not add up to \(total), first: \(String(describing: wrong.first))")
            let last = try #require(try await status.queueGauges()["hook"])
            #expect(last.pending == 0 && last.deadLetters == total && last.oldestEventTime == nil)
        }
    }
}
