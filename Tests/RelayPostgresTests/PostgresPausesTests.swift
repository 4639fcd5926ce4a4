import Foundation
import PostgresNIO
import RelayCore
import RelayPostgres
import Testing

/// `pauseAfter` held for every instance: one shared count, one pause however many instances count at once, one
/// probe at a time, and a delivery or `resume` from anywhere lifting it.
@Suite(.enabled(if: TestDatabase.available, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
struct PostgresPausesTests {
    static let since = Timestamp(millisecondsSinceEpoch: 1_714_521_600_000)

    static func pause(_ count: Int) -> SubscriptionPause {
        SubscriptionPause(reason: "paused after \(count) consecutive dead letters (HTTP 400)", since: since, webhook: "hook-v1")
    }

    func withPauses(_ body: (PostgresPauses, PostgresClient, String) async throws -> Void) async throws {
        try await TestDatabase.withClient { client, schema in
            let database = TestDatabase.database(client, schema)
            try await PostgresSchema.migrate(database)
            try await body(PostgresPauses(database), client, schema)
        }
    }

    @Test func countingAtOnceFromManyInstancesPausesOnce() async throws {
        try await withPauses { pauses, _, _ in
            let counted = try await withThrowingTaskGroup(of: (pause: SubscriptionPause, madeNow: Bool)?.self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        try await pauses.countDeadLetters("hook", events: 1, pauseAfter: 10, pause: Self.pause, probeEvery: .seconds(300))
                    }
                }
                return try await group.reduce(into: [(pause: SubscriptionPause, madeNow: Bool)]()) { if let counted = $1 { $0.append(counted) } }
            }
            #expect(counted.filter(\.madeNow).map(\.pause) == [Self.pause(10)], "the tenth dead letter pauses, and only it")
            #expect(counted.count == 11 && counted.allSatisfy { $0.pause == Self.pause(10) }, "the ten after it find the pause in force")
            #expect(try await pauses.pause(of: "hook") == Self.pause(10))
            #expect(try await pauses.pause(of: "other") == nil)
            // pauseAfter 0: never paused, however many.
            #expect(try await pauses.countDeadLetters("other", events: 50, pauseAfter: 0, pause: Self.pause, probeEvery: .seconds(300)) == nil)
            #expect(try await pauses.pause(of: "other") == nil)
        }
    }

    @Test func aDeliveryZeroesTheCountAndLiftsAPause() async throws {
        try await withPauses { pauses, _, _ in
            let twoDeadLetters = try await pauses.countDeadLetters("hook", events: 2, pauseAfter: 3, pause: Self.pause, probeEvery: .seconds(300))
            #expect(twoDeadLetters == nil)
            #expect(try await pauses.delivered("hook") == false, "nothing was paused")
            // Counted from zero again: two more do not pause, a third does.
            let two = try await pauses.countDeadLetters("hook", events: 2, pauseAfter: 3, pause: Self.pause, probeEvery: .seconds(300))
            #expect(two == nil)
            let third = try await pauses.countDeadLetters("hook", events: 1, pauseAfter: 3, pause: Self.pause, probeEvery: .seconds(300))
            #expect(third?.pause == Self.pause(3) && third?.madeNow == true)
            #expect(try await pauses.delivered("hook"))
            #expect(try await pauses.pause(of: "hook") == nil)
        }
    }

    @Test func oneProbeAtATimeOnceDueAndResumeLiftsThePause() async throws {
        try await withPauses { pauses, client, schema in
            _ = try await pauses.countDeadLetters("hook", events: 5, pauseAfter: 5, pause: Self.pause, probeEvery: .seconds(300))
            #expect(try await !pauses.takeProbe("hook", probeEvery: .seconds(300)), "the first probe is due a probe interval after the pause")
            // The database's clock decides: the test moves the time rather than waiting.
            try await client.query("UPDATE \(unescaped: schema).subscription_pause SET probe_at = now() - interval '1 second'")
            let taken = try await withThrowingTaskGroup(of: Bool.self) { group in
                for _ in 0..<5 { group.addTask { try await pauses.takeProbe("hook", probeEvery: .seconds(300)) } }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(taken == 1)
            #expect(try await pauses.resume("hook"))
            #expect(try await pauses.pause(of: "hook") == nil)
            #expect(try await !pauses.resume("hook"), "not paused any more")
            #expect(try await !pauses.takeProbe("hook", probeEvery: .seconds(300)))
        }
    }
}
