import Foundation
import GRDB
import IntilerySimulator
import RelayCore
import RelayJSON
import Testing

/// Batches never change between attempts, strict order holds with batches and late rows, and every read on the
/// delivery path uses an index.
@Suite struct BatchOrderTests {
    static func eventIDs(_ request: ReceivedWebhook) -> [String] {
        (try? JSONParser.parse(request.body).arrayValue)?.compactMap { $0.objectValue?["eventID"]?.stringValue } ?? []
    }

    @Test func aBatchKeepsItsMembersOrderAndIDWhenALaterQueuedRowIsEarlierInTime() async throws {
        try await withDelivery { fixture in
            let subscription = fixture.subscription("b") { $0.batchSize = 4 }
            fixture.receiver.script("/hooks/b", [.status(503)], then: .ok)
            // evt-50 queued first, evt-40 a second later with an earlier event time: due order and time order differ.
            try await fixture.enqueue(1, for: ["b"], startingAt: 50)
            fixture.clock.advance(by: .seconds(1))
            try await fixture.enqueue(1, for: ["b"], startingAt: 40)
            try await fixture.deliver([fixture.dispatcher(subscription)], until: DispatcherTests.outboxEmpty("b"))
            let requests = fixture.receiver.record.requests(to: "/hooks/b")
            #expect(requests.count == 2)
            #expect(requests[0].webhookID == requests[1].webhookID)
            #expect(requests[0].body == requests[1].body)
            #expect(Self.eventIDs(requests[0]) == ["evt-40", "evt-50"])
        }
    }

    @Test func strictOrderHoldsWithBatchesAndLateRows() async throws {
        try await withDelivery { fixture in
            let subscription = fixture.subscription("s") {
                $0.ordering = .strict
                $0.batchSize = 5
            }
            fixture.receiver.script("/hooks/s", [.status(503)], then: .ok)
            try await fixture.enqueue(2, for: ["s"], startingAt: 10)
            // Until the first batch has failed once.
            try await fixture.deliver([fixture.dispatcher(subscription)]) { _ in
                fixture.receiver.record.countsByPath["/hooks/s", default: 0] >= 1
            }
            // Later events, and one late row whose time is before the failed batch.
            try await fixture.enqueue(3, for: ["s"], startingAt: 20)
            try await fixture.enqueue(1, for: ["s"], startingAt: 5)
            try await fixture.deliver([fixture.dispatcher(subscription)], until: DispatcherTests.outboxEmpty("s"))
            let requests = fixture.receiver.record.requests(to: "/hooks/s")
            let sent = requests.map(Self.eventIDs)
            #expect(sent == [["evt-10", "evt-11"], ["evt-5"], ["evt-10", "evt-11"], ["evt-20", "evt-21", "evt-22"]])
            #expect(requests[0].webhookID == requests[2].webhookID && requests[0].body == requests[2].body)
            // Nothing later went before the failed batch was delivered.
            let delivered = requests.filter { $0.answeredStatus == 200 }.flatMap(Self.eventIDs)
            #expect(delivered == ["evt-5", "evt-10", "evt-11", "evt-20", "evt-21", "evt-22"])
        }
    }

    @Test func whileAStrictSubscriptionJoinsTheSharedPollNothingAtOrAfterTheJoinGoes() async throws {
        try await withDelivery { fixture in
            let subscription = fixture.subscription("s") { $0.ordering = .strict }
            _ = try await fixture.store.registerSubscriptions([subscription], now: fixture.now)
            // evt-20 and evt-21 came from the shared poll just after the join; evt-10 is older.
            try await fixture.enqueue(1, for: ["s"], startingAt: 10)
            try await fixture.enqueue(2, for: ["s"], startingAt: 20)
            let joinedAt = ingestEpoch - 100_000 + 15
            let queue = try DatabaseQueue(path: fixture.directory.appendingPathComponent(StateStore.fileName).path)
            try await queue.write { db in
                try db.execute(sql: "UPDATE subscription_cursor SET state = 'joining', position = ?, tail_until = ? WHERE subscription = 's'",
                               arguments: [joinedAt, joinedAt + 100])
            }
            let dispatcher = fixture.dispatcher(subscription)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await fixture.writer.run() }
                group.addTask { try await dispatcher.run() }
                #expect(await fixture.receiver.waitUntil { $0.successesByPath["/hooks/s", default: 0] >= 1 })
                // Held: a minute of test time passes and nothing more goes.
                let heldSince = fixture.now
                while fixture.now.millisecondsSinceEpoch - heldSince.millisecondsSinceEpoch < 60_000 { try await Task.sleep(for: .milliseconds(5)) }
                #expect(fixture.receiver.record.countsByPath["/hooks/s"] == 1)
                // The tail read found evt-12 (older than the joined rows); then the join ends.
                try await fixture.enqueue(1, for: ["s"], startingAt: 12)
                try await fixture.store.finishJoin("s")
                dispatcher.wakeup.signal()
                #expect(await fixture.receiver.waitUntil { $0.successesByPath["/hooks/s", default: 0] >= 4 })
                group.cancelAll()
            }
            #expect(fixture.eventIDs(sentTo: "s") == ["evt-10", "evt-12", "evt-20", "evt-21"])
        }
    }

    @Test func everyReadOnTheDeliveryPathUsesAnIndexAtAMillionQueuedRows() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("relay-plan-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try StateStore.open(directory: directory.path)
        let queue = try DatabaseQueue(path: directory.appendingPathComponent(StateStore.fileName).path)
        try await queue.write { db in
            // A million events for two subscriptions; one row in ten attempted (and in a batch), due times spread
            // over 1,000 s.
            try db.execute(sql: """
                INSERT INTO subscription_key (id, name) VALUES (1, 'a'), (2, 'b');
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)
                INSERT INTO event (id, source, event_id, event_time, action, time_value, payload, queued_at, pending)
                SELECT i, 's', 'e' || i, 1714521600000 + i, 'x', '0', x'7b7d', 1714521600000 + i, 1 FROM n;
                INSERT INTO delivery (subscription, event_time, event)
                SELECT 1 + id % 2, event_time, id FROM event WHERE id % 10 != 0;
                INSERT INTO delivery_attempt (subscription, event_time, event, next_attempt_at, attempts, batch_id, batch_seq)
                SELECT 1 + id % 2, event_time, id, 1714521600000 + (id % 1000) * 1000, 1, 'batch-' || (id / 50), id
                FROM event WHERE id % 10 = 0;
                """)
            try db.execute(sql: "ANALYZE")
        }
        #expect(try await queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM delivery") } == 900_000)
        #expect(StateStore.deliveryQueries.count == 15)
        for (name, sql) in StateStore.deliveryQueries {
            let plan = try await queue.read { db in
                try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql, arguments: StatementArguments(
                    Array(repeating: 1 as (any DatabaseValueConvertible)?, count: sql.filter { $0 == "?" }.count))
                ).map { $0["detail"] as String }
            }
            // SEARCH: an index narrows the rows; never a SCAN of the table nor a sort of its rows.
            #expect(plan.allSatisfy { $0.hasPrefix("SEARCH ") || $0.contains("SUBQUERY") }, "\(name): \(plan)")
            #expect(!plan.contains { $0.hasPrefix("SCAN") }, "\(name): \(plan)")
            #expect(!plan.contains { $0.contains("TEMP B-TREE") }, "\(name): \(plan)")
            if name == "queued from key" || name == "queued keys from" {
                // A range of the key from the given one, not every row of the subscription.
                #expect(plan.contains { $0.contains("(event_time,event)>") }, "\(name): \(plan)")
            }
        }
    }
}
