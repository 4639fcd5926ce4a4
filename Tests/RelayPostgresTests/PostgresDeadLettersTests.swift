import Foundation
import Logging
import PostgresNIO
import RelayCore
import RelayPostgres
import Testing

/// What PostgreSQL's dead letters do beyond the conformance suite: the shared event rows a replay stores again and
/// releases, against a real PostgreSQL.
@Suite(.enabled(if: TestDatabase.available, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
struct PostgresDeadLettersTests {
    static let now = PostgresDeliveriesTests.now

    /// Five events for "hook" and "other"; hook's e0–e2 dead-lettered (e0 with a 410, the others a 400), e3
    /// delivered, e4 still queued; other keeps all five queued.
    static func withLetters(_ body: (PostgresDeadLetters, PostgresDeliveries, PostgresClient, String) async throws -> Void) async throws {
        try await TestDatabase.withClient { client, schema in
            try await PostgresSchema.migrate(TestDatabase.database(client, schema))
            let queue = PostgresDeliveries(TestDatabase.database(client, schema))
            try await queue.queue(PostgresDeliveriesTests.events(5), source: "acme", for: ["hook", "other"], now: now)
            let claimed = try await queue.claim("hook", requests: 4, batchSize: 1, by: "relay-1", visibility: .seconds(300))
            #expect(claimed.map { $0.deliveries[0].eventID } == ["e0", "e1", "e2", "e3"])
            _ = try await queue.record(
                claimed.enumerated().map { index, request in
                    var outcome = DeliveryOutcome(
                        deliveries: request.deliveries, decision: index == 3 ? .delivered : .deadLetter(reason: index == 0 ? "http_410" : "http_400"),
                        attemptedAt: Timestamp(millisecondsSinceEpoch: now.millisecondsSinceEpoch + Int64(index)), status: index == 0 ? 410 : 400)
                    outcome.responseSnippet = Array("no \(index)".utf8)
                    return ClaimedOutcome(token: request.token, outcome: outcome)
                }, now: now)
            try await body(PostgresDeadLetters(TestDatabase.database(client, schema)), queue, client, schema)
        }
    }

    @Test func aReplayQueuesThemAgainOnceAndAPurgeDeletesThem() async throws {
        try await Self.withLetters { letters, queue, client, schema in
            #expect(try await letters.replayDeadLetters(DeadLetterFilter(status: 400), now: Self.now) == (taken: 2, queued: 2))
            #expect(try await letters.deadLetters(DeadLetterFilter()).map(\.eventID) == ["e0"])
            // Fresh attempts, due at once: e1, e2 and e4, which was queued all along.
            let again = try await queue.claim("hook", requests: 10, batchSize: 1, by: "relay-2", visibility: .seconds(300))
            #expect(Set(again.map { $0.deliveries[0].eventID }) == ["e1", "e2", "e4"])
            #expect(again.allSatisfy { $0.deliveries[0].attempts == 0 && $0.deliveries[0].payload.count > 0 })
            _ = try await queue.record(again.map { PostgresDeliveriesTests.outcome($0, .delivered) }, now: Self.now)
            // Replaying one whose event is still queued for its subscription queues nothing twice.
            try await client.query(
                """
                INSERT INTO \(unescaped: schema).dead_letter (subscription, source, event_id, event_time, action, time_value, payload, reason,
                    response, attempts, first_attempt_at, last_attempt_at, dead_at)
                SELECT 'other', source, event_id, event_time, action, time_value, payload, 'http_500', '', 3, 0, 0, 1 FROM \(unescaped: schema).event
                WHERE event_id = 'e4'
                """)
            #expect(try await letters.replayDeadLetters(DeadLetterFilter(subscription: "other"), now: Self.now) == (taken: 1, queued: 0))
            #expect(try await letters.purgeDeadLetters(DeadLetterFilter()) == 1)
            #expect(try await letters.deadLetters(DeadLetterFilter()).isEmpty)
            #expect(try await PostgresStatus(TestDatabase.database(client, schema)).queueDepths() == ["other": 5])
            // Every event row still stored is needed by a queued delivery, with the right count.
            let rows = try await client.query(
                """
                SELECT count(*) FROM \(unescaped: schema).event e
                WHERE e.pending != (SELECT count(*) FROM \(unescaped: schema).delivery d WHERE d.event = e.id)
                """)
            for try await wrong in rows.decode(Int.self) { #expect(wrong == 0) }
        }
    }
}
