import Foundation
import Logging
import PostgresNIO
import RelayCore
import RelayJSON
import RelayPostgres
import Testing

/// Claims on the shared queue, as several instances make them, against a real PostgreSQL.
@Suite(.enabled(if: TestDatabase.available, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
struct PostgresDeliveriesTests {
    static let now = Timestamp(millisecondsSinceEpoch: 1_714_521_600_000)

    /// `count` events a millisecond apart, ids `e0`, `e1`... in time order.
    static func events(_ count: Int, from first: Int = 0) -> [Event] {
        (first..<(first + count)).map { index in
            let time = Timestamp(millisecondsSinceEpoch: now.millisecondsSinceEpoch - 100_000 + Int64(index))
            return Event(
                id: "e\(index)", time: time, action: "click", timeValue: .string(time.iso8601), 
                raw: Array(#"{"eventID":"e\#(index)","n":\#(index)}"#.utf8))
        }
    }

    func withQueue(_ body: (PostgresDeliveries, PostgresClient, String) async throws -> Void) async throws {
        try await TestDatabase.withClient { client, schema in
            try await PostgresSchema.migrate(TestDatabase.database(client, schema))
            try await body(PostgresDeliveries(TestDatabase.database(client, schema)), client, schema)
        }
    }

    /// Ends every claim of `subscription` now, as its visibility timeout passing would (the database's clock
    /// decides, so the test moves the times rather than waiting).
    static func timeOut(_ subscription: String, schema: String, _ client: PostgresClient) async throws {
        try await client.query(
            "UPDATE \(unescaped: schema).delivery SET visible_at = now() - interval '1 second' WHERE subscription = \(subscription)")
        try await client.query(
            "UPDATE \(unescaped: schema).strict_gate SET claim_expires_at = now() - interval '1 second' WHERE subscription = \(subscription)")
    }

    static func rowCount(_ table: String, schema: String, _ client: PostgresClient) async throws -> Int {
        let rows = try await client.query("SELECT count(*) FROM \(unescaped: schema).\(unescaped: table)")
        for try await count in rows.decode(Int.self) { return count }
        return -1
    }

    static func outcome(_ claimed: ClaimedRequest, _ decision: DeliveryOutcome.Decision, status: Int? = 200) -> ClaimedOutcome {
        ClaimedOutcome(
            token: claimed.token,
            outcome: DeliveryOutcome(deliveries: claimed.deliveries, decision: decision, attemptedAt: now, status: status))
    }

    @Test func claimsDueRowsForFreeSlotsOnlyInEventTimeOrder() async throws {
        try await withQueue { queue, client, schema in
            #expect(try await queue.queue(Self.events(10), source: "acme", for: ["a", "b"], now: Self.now) == 10)
            #expect(try await queue.queue(Self.events(3), source: "acme", for: ["a", "b"], now: Self.now) == 0, "stored already")
            let first = try await queue.claim("a", requests: 3, batchSize: 1, by: "relay-1", visibility: .seconds(300))
            #expect(first.map { $0.deliveries.map(\.eventID) } == [["e0"], ["e1"], ["e2"]])
            #expect(first.allSatisfy { $0.deliveries[0].payload == Array(#"{"eventID":"\#($0.deliveries[0].eventID)","n":\#($0.deliveries[0].eventID.dropFirst())}"#.utf8) })
            let rest = try await queue.claim("a", requests: 100, batchSize: 1, by: "relay-2", visibility: .seconds(300))
            #expect(rest.flatMap { $0.deliveries.map(\.eventID) } == (3..<10).map { "e\($0)" })
            #expect(try await queue.claim("a", requests: 100, batchSize: 1, by: "relay-1", visibility: .seconds(300)).isEmpty, "all claimed")
            #expect(try await queue.claim("b", requests: 100, batchSize: 1, by: "relay-1", visibility: .seconds(300)).count == 10, "b has its own rows")

            // Delivered for a: the event rows stay, b still needs them.
            #expect(try await queue.record((first + rest).map { Self.outcome($0, .delivered) }, now: Self.now) == (applied: 10, stale: 0))
            #expect(try await Self.rowCount("delivery", schema: schema, client) == 10)
            #expect(try await Self.rowCount("event", schema: schema, client) == 10)
        }
    }

    /// Four instances claim and record for two subscriptions of the same events at once, in orders that cross
    /// (each event's row is released by both): every event goes to each subscription once, and no instance
    /// waits on another in a circle (PostgreSQL would abort one with a deadlock).
    @Test(arguments: [1, 4])
    func instancesClaimingTogetherNeverShareARowAndDrainEverything(batchSize: Int) async throws {
        try await withQueue { queue, client, schema in
            try await queue.queue(Self.events(400), source: "acme", for: ["hook", "other"], now: Self.now)
            let sent = try await withThrowingTaskGroup(of: [[String]].self) { group in
                for instance in 0..<4 {
                    group.addTask {
                        var sent: [[String]] = []
                        var emptyInARow = 0
                        for turn in 0... {
                            let subscription = (instance + turn) % 2 == 0 ? "hook" : "other"
                            let claimed = try await queue.claim(
                                subscription, requests: 5, batchSize: batchSize, by: "relay-\(instance)", visibility: .seconds(300))
                            if claimed.isEmpty {
                                emptyInARow += 1
                                if emptyInARow == 2 { return sent }
                                continue
                            }
                            emptyInARow = 0
                            sent += claimed.map { $0.deliveries.map { "\(subscription):\($0.eventID)" } }
                            // Recorded in an order of its own: the other instances' orders cross it.
                            let result = try await queue.record(claimed.shuffled().map { Self.outcome($0, .delivered) }, now: Self.now)
                            #expect(result == (applied: claimed.count, stale: 0))
                        }
                        return sent
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            let events = sent.flatMap { $0 }
            #expect(events.count == 800, "each event sent once to each subscription")
            #expect(Set(events) == Set((0..<400).flatMap { ["hook:e\($0)", "other:e\($0)"] }))
            #expect(sent.allSatisfy { $0.count <= batchSize })
            #expect(try await Self.rowCount("delivery", schema: schema, client) == 0)
            #expect(try await Self.rowCount("event", schema: schema, client) == 0, "each event's row went with its last delivery")
        }
    }

    @Test func aTimedOutClaimGoesToTheNextClaimantAndTheFormerOnesOutcomeIsStale() async throws {
        try await withQueue { queue, client, schema in
            try await queue.queue(Self.events(2), source: "acme", for: ["hook"], now: Self.now)
            let stalled = try #require(try await queue.claim("hook", requests: 1, batchSize: 1, by: "relay-1", visibility: .seconds(300)).first)
            try await Self.timeOut("hook", schema: schema, client)
            let takeover = try await queue.claim("hook", requests: 2, batchSize: 1, by: "relay-2", visibility: .seconds(300))
            #expect(takeover.map { $0.deliveries[0].eventID } == ["e0", "e1"], "the timed-out row is due again, in its place")
            #expect(takeover[0].token != stalled.token)

            // The stalled instance wakes and reports: nothing of it applies, the row stays with its new claimant.
            #expect(try await queue.record([Self.outcome(stalled, .deadLetter(reason: "http_400"), status: 400)], now: Self.now) == (applied: 0, stale: 1))
            #expect(try await Self.rowCount("dead_letter", schema: schema, client) == 0)
            #expect(try await queue.record(takeover.map { Self.outcome($0, .delivered) }, now: Self.now) == (applied: 2, stale: 0))
            #expect(try await Self.rowCount("delivery", schema: schema, client) == 0)
        }
    }

    @Test func aBatchIsComposedOnceAndClaimedWholeAfterARetryOrATimeout() async throws {
        try await withQueue { queue, client, schema in
            try await queue.queue(Self.events(12), source: "acme", for: ["hook"], now: Self.now)
            let first = try await queue.claim("hook", requests: 10, batchSize: 5, by: "relay-1", visibility: .seconds(300))
            #expect(first.map { $0.deliveries.map(\.eventID) } == [(0..<5), (5..<10), (10..<12)].map { $0.map { "e\($0)" } })
            for request in first {
                let ids = request.deliveries.map(\.eventID)
                #expect(request.deliveries.allSatisfy { $0.batchID == WebhookRequestBuilder.webhookID(subscription: "hook", eventIDs: ids, batched: true) })
                #expect(request.deliveries.map(\.batchPosition) == Array(0..<ids.count))
            }
            // One batch failed (retry due at once), the others' claims timed out: each comes back whole, as it was.
            #expect(try await queue.record([Self.outcome(first[0], .retry(at: Self.now), status: 503)], now: Self.now) == (applied: 1, stale: 0))
            try await Self.timeOut("hook", schema: schema, client)
            try await queue.queue(Self.events(3, from: 12), source: "acme", for: ["hook"], now: Self.now)
            let again = try await queue.claim("hook", requests: 10, batchSize: 5, by: "relay-2", visibility: .seconds(300))
            #expect(Array(again.prefix(3).map { $0.deliveries.map(\.eventID) }) == first.map { $0.deliveries.map(\.eventID) })
            #expect(Array(again.prefix(3).map { $0.deliveries.compactMap(\.batchID) }) == first.map { $0.deliveries.compactMap(\.batchID) })
            #expect(again[0].deliveries.allSatisfy { $0.attempts == 1 && $0.firstAttemptAt == Self.now })
            #expect(again.dropFirst(3).map { $0.deliveries.map(\.eventID) } == [["e12", "e13", "e14"]], "new rows make a new batch")
        }
    }

    @Test func strictOrderHoldsAcrossInstances() async throws {
        try await withQueue { queue, client, schema in
            try await queue.queue(Self.events(3), source: "acme", for: ["ordered"], now: Self.now)
            let head = try #require(try await queue.claimHead("ordered", batchSize: 1, by: "relay-1", visibility: .seconds(300)))
            #expect(head.deliveries.map(\.eventID) == ["e0"])
            #expect(try await queue.claimHead("ordered", batchSize: 1, by: "relay-2", visibility: .seconds(300)) == nil, "one request out at a time")

            // The head fails, with its retry a minute off: nothing behind it may go meanwhile.
            let retryAt = Timestamp(millisecondsSinceEpoch: Self.now.millisecondsSinceEpoch + 60_000)
            _ = try await queue.record([Self.outcome(head, .retry(at: retryAt), status: 500)], now: Self.now)
            #expect(try await queue.claimHead("ordered", batchSize: 1, by: "relay-2", visibility: .seconds(300)) == nil)
            try await Self.timeOut("ordered", schema: schema, client)
            let retried = try #require(try await queue.claimHead("ordered", batchSize: 1, by: "relay-2", visibility: .seconds(300)))
            #expect(retried.deliveries.map(\.eventID) == ["e0"])
            #expect(retried.deliveries[0].attempts == 1)

            // relay-2 stalls past the timeout: relay-3 takes the head over, and relay-2's late success is stale.
            try await Self.timeOut("ordered", schema: schema, client)
            let takeover = try #require(try await queue.claimHead("ordered", batchSize: 1, by: "relay-3", visibility: .seconds(300)))
            #expect(takeover.deliveries.map(\.eventID) == ["e0"])
            #expect(try await queue.record([Self.outcome(retried, .delivered)], now: Self.now) == (applied: 0, stale: 1))
            #expect(try await queue.claimHead("ordered", batchSize: 1, by: "relay-1", visibility: .seconds(300)) == nil, "the gate is relay-3's")
            _ = try await queue.record([Self.outcome(takeover, .delivered)], now: Self.now)
            let next = try #require(try await queue.claimHead("ordered", batchSize: 1, by: "relay-1", visibility: .seconds(300)))
            #expect(next.deliveries.map(\.eventID) == ["e1"])
        }
    }

    /// A late event that becomes the head while a request is out waits for it: the gate holds it back, not the
    /// head's schedule.
    @Test func theGateHoldsBackALateEventThatBecomesTheHead() async throws {
        try await withQueue { queue, _, _ in
            try await queue.queue(Self.events(1), source: "acme", for: ["ordered"], now: Self.now)
            let out = try #require(try await queue.claimHead("ordered", batchSize: 1, by: "relay-1", visibility: .seconds(300)))
            try await queue.queue(Self.events(1, from: -1), source: "acme", for: ["ordered"], now: Self.now)
            #expect(try await queue.claimHead("ordered", batchSize: 1, by: "relay-2", visibility: .seconds(300)) == nil)
            _ = try await queue.record([Self.outcome(out, .delivered)], now: Self.now)
            let late = try #require(try await queue.claimHead("ordered", batchSize: 1, by: "relay-2", visibility: .seconds(300)))
            #expect(late.deliveries.map(\.eventID) == ["e-1"])
        }
    }

    /// Events of one millisecond keep the page's order, whatever subscriptions each goes to.
    @Test func eventsOfOneMillisecondKeepThePagesOrder() async throws {
        try await withQueue { queue, client, schema in
            let time = Self.now
            let events = ["a", "b", "c", "d"].map {
                Event(id: $0, time: time, action: "click", timeValue: .string(time.iso8601), raw: Array("{}".utf8))
            }
            let routed = zip(events, [["x"], ["x", "y"], ["x"], ["y", "x"]]).map { RoutedEvent(event: $0, subscriptions: $1) }
            try await client.withConnection { connection in
                _ = try await queue.queue(routed, source: "acme", now: Self.now, on: connection)
            }
            let line = try #require(try await queue.claimHead("x", batchSize: 4, by: "relay-1", visibility: .seconds(300)))
            #expect(line.deliveries.map(\.eventID) == ["a", "b", "c", "d"])
            _ = schema
        }
    }

    @Test func aStrictHeadIsBatchedWithTheRowsRightBehindIt() async throws {
        try await withQueue { queue, _, _ in
            try await queue.queue(Self.events(7), source: "acme", for: ["ordered"], now: Self.now)
            let batch = try #require(try await queue.claimHead("ordered", batchSize: 3, by: "relay-1", visibility: .seconds(300)))
            #expect(batch.deliveries.map(\.eventID) == ["e0", "e1", "e2"])
            _ = try await queue.record([Self.outcome(batch, .delivered)], now: Self.now)
            let next = try #require(try await queue.claimHead("ordered", batchSize: 3, by: "relay-2", visibility: .seconds(300)))
            #expect(next.deliveries.map(\.eventID) == ["e3", "e4", "e5"])
        }
    }

    @Test func aDeadLetterKeepsTheEventTheReasonAndTheAttempts() async throws {
        try await withQueue { queue, client, schema in
            try await queue.queue(Self.events(1), source: "acme", for: ["hook"], now: Self.now)
            let first = try #require(try await queue.claim("hook", requests: 1, batchSize: 1, by: "relay-1", visibility: .seconds(300)).first)
            _ = try await queue.record([Self.outcome(first, .retry(at: Self.now), status: 503)], now: Self.now)
            let second = try #require(try await queue.claim("hook", requests: 1, batchSize: 1, by: "relay-2", visibility: .seconds(300)).first)
            var outcome = DeliveryOutcome(deliveries: second.deliveries, decision: .deadLetter(reason: "http_410"), attemptedAt: Self.now, status: 410)
            outcome.responseSnippet = Array("gone".utf8)
            #expect(try await queue.record([ClaimedOutcome(token: second.token, outcome: outcome)], now: Self.now) == (applied: 1, stale: 0))
            let rows = try await client.query(
                "SELECT event_id, reason, last_status, attempts, payload, response FROM \(unescaped: schema).dead_letter")
            var letters = 0
            for try await (eventID, reason, status, attempts, payload, response) in rows.decode((String, String, Int?, Int, ByteBuffer, ByteBuffer).self) {
                letters += 1
                #expect(eventID == "e0" && reason == "http_410" && status == 410 && attempts == 2)
                #expect(Array(buffer: payload) == Self.events(1)[0].raw)
                #expect(String(buffer: response) == "gone")
            }
            #expect(letters == 1)
            #expect(try await Self.rowCount("event", schema: schema, client) == 0)
        }
    }
}
