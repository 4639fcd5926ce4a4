import Foundation
import GRDB
import RelayCore
import RelayJSON
import Testing

/// Each event's bytes are stored once whatever the number of subscriptions, and the counts kept with the queue
/// (`queue_depth`, each event's `pending`) stay true through every path that adds or removes a delivery.
@Suite struct PayloadStorageTests {
    static func at(_ ms: Int64) -> Timestamp { Timestamp(millisecondsSinceEpoch: ms) }

    static func rawCount(_ store: StateStore, _ sql: String) async throws -> Int {
        let queue = try DatabaseQueue(path: store.directory + "/" + StateStore.fileName)
        return try await queue.read { try Int.fetchOne($0, sql: sql) ?? -1 }
    }

    /// Five subscriptions, each taking every event.
    static let names = ["a", "b", "c", "d", "e"]

    /// Queues `count` events, each for every one of ``names``.
    static func enqueueForAll(_ count: Int, _ store: StateStore) async throws -> EnqueueResult {
        let events = (0..<count).map { RoutedEvent(event: StateStoreTests.event("evt-\($0)", 1_000 + Int64($0)), subscriptions: names) }
        return try await store.enqueue(source: "s", events: events, cursor: Self.at(2_000), now: Self.at(3_000))
    }

    @Test func aPayloadIsStoredOnceAndGoesWithItsLastDelivery() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let names = Self.names
        let result = try await Self.enqueueForAll(100, store)
        #expect(result.queued == 500)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 100)
        // Queued in the five logs: a bit each on the event row, no row of their own.
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM delivery") == 0)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event WHERE routing = 31") == 100)
        #expect(try await store.queueCountProblems() == [])

        // Four subscriptions deliver everything: the bytes stay for the fifth, then go with its last delivery.
        for name in names.dropLast() {
            let rows = try await store.deliveries(subscription: name, due: Self.at(3_000), limit: 1_000, strict: false, excluding: [])
            #expect(rows.count == 100)
            #expect(rows.first?.payload == Array("{\"id\":\"evt-0\"}".utf8))
            try await store.record([DeliveryOutcome(deliveries: rows, decision: .delivered, attemptedAt: Self.at(3_100))])
        }
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 100)
        #expect(try await store.queueDepth("e") == 100)
        #expect(try await store.queueDepth("a") == 0)
        let last = try await store.deliveries(subscription: "e", due: Self.at(3_000), limit: 1_000, strict: false, excluding: [])
        try await store.record([DeliveryOutcome(deliveries: last, decision: .delivered, attemptedAt: Self.at(3_100))])
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 0)
        #expect(try await store.queueCountProblems() == [])
    }

    /// Rows of new events are inserted a subscription at a time, many to a statement (DeliveryRows): each
    /// subscription still gets exactly its events, in order, when each takes a different part of a page, a page
    /// repeats an event, and the page's size is not a statement's.
    @Test func eachSubscriptionGetsExactlyItsEventsWhenAPageIsQueuedManyRowsToAStatement() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        // Subscription k takes the events whose number is not a multiple of k + 2.
        func takes(_ name: String, _ number: Int) -> Bool { number % (Self.names.firstIndex(of: name)! + 2) != 0 }
        var events = (0..<203).map { number in
            RoutedEvent(
                event: StateStoreTests.event("evt-\(number)", 1_000 + Int64(number)),
                subscriptions: Self.names.filter { takes($0, number) })
        }
        events.insert(events[7], at: 150)
        let result = try await store.enqueue(source: "s", events: events, cursor: Self.at(2_000), now: Self.at(3_000))
        #expect(result.duplicates == 1)
        for name in Self.names {
            let expected = (0..<203).filter { takes(name, $0) }.map { "evt-\($0)" }
            let rows = try await store.deliveries(subscription: name, due: Self.at(3_000), limit: 1_000, strict: true, excluding: [])
            #expect(rows.map(\.eventID) == expected, "\(name)")
            #expect(result.handOff[name]?.map(\.eventID) == expected, "\(name)")
            #expect(try await store.queueDepth(name) == expected.count)
        }
        #expect(try await store.queueCountProblems() == [])
    }

    /// A delivered batch's rows go with one range delete over their span of event times (DeliveryRows) only when
    /// nothing else is queued in that span: a late event inside it stays queued, and members attempted before (in
    /// `delivery_attempt`) go too.
    @Test func aDeliveredBatchTakesOnlyItsOwnRowsFromItsSpan() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        func queue(_ ids: [(String, Int64)]) async throws {
            let events = ids.map { RoutedEvent(event: StateStoreTests.event($0.0, $0.1), subscriptions: ["a"]) }
            _ = try await store.enqueue(source: "s", events: events, cursor: Self.at(2_000), now: Self.at(3_000))
        }
        func queued() async throws -> [String] {
            try await store.deliveries(subscription: "a", due: Self.at(9_000), limit: 1_000, strict: true, excluding: [])
                .map(\.eventID)
        }
        try await queue((0..<30).map { ("evt-\($0)", 1_000 + 2 * Int64($0)) })
        let first = Array(try await store.deliveries(subscription: "a", due: Self.at(3_000), limit: 10, strict: true, excluding: []))
        let second = Array(
            try await store.deliveries(subscription: "a", due: Self.at(3_000), limit: 10, strict: true, excluding: Set(first.map(\.id))))
        // A late event inside the first batch's span, one after the second's; one of the second's members attempted.
        try await queue([("late-1", 1_005), ("late-2", 1_041)])
        try await store.record([
            DeliveryOutcome(deliveries: [second[3]], decision: .retry(at: Self.at(3_500)), attemptedAt: Self.at(3_100), status: 500)
        ])
        try await store.record([
            DeliveryOutcome(deliveries: first, decision: .delivered, attemptedAt: Self.at(3_200), status: 200),
            DeliveryOutcome(deliveries: second, decision: .delivered, attemptedAt: Self.at(3_200), status: 200),
        ])
        let expected = ["late-1", "late-2"] + (20..<30).map { "evt-\($0)" }
        #expect(try await queued().sorted() == expected.sorted())
        #expect(try await store.queueDepth("a") == expected.count)
        #expect(try await store.queueCountProblems() == [])

        // With nothing else in its span, a batch takes all of it.
        let rest = try await store.deliveries(subscription: "a", due: Self.at(9_000), limit: 10, strict: true, excluding: [])
        #expect(rest.count == 10)
        try await store.record([DeliveryOutcome(deliveries: rest, decision: .delivered, attemptedAt: Self.at(3_300), status: 200)])
        #expect(rest.map(\.eventID) == ["late-1", "evt-20", "late-2"] + (21...27).map { "evt-\($0)" })
        #expect(try await queued() == ["evt-28", "evt-29"])
        #expect(try await store.queueCountProblems() == [])
    }

    /// A read of queued rows takes the ones the keys pick in one pass from the first that is not in flight
    /// (StateStore.deliveries): it returns the same rows, in the same order, as reading each by its key, with rows
    /// in flight before, inside and after the run, and at a millisecond shared by several events.
    @Test func aReadOfQueuedRowsLeavesOutExactlyTheOnesInFlight() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        // Three events to a millisecond.
        let events = (0..<60).map { RoutedEvent(event: StateStoreTests.event("evt-\($0)", 1_000 + Int64($0 / 3)), subscriptions: ["a"]) }
        _ = try await store.enqueue(source: "s", events: events, cursor: Self.at(2_000), now: Self.at(3_000))
        let all = try await store.deliveries(subscription: "a", due: Self.at(3_000), limit: 100, strict: false, excluding: [])
        #expect(all.map(\.eventID) == (0..<60).map { "evt-\($0)" })
        for (inFlight, limit) in [
            (Set(0..<7).union([9, 13]), 20),  // a head in flight and two inside the run: one pass
            (Set(0..<4).union(stride(from: 5, to: 40, by: 2)), 10),  // every other one in flight: a read each
            (Set([1, 2]), 60),  // fewer rows than the limit
            (Set(0..<58), 10),  // too few left for one pass
        ] {
            let excluding = Set(inFlight.map { all[$0].id })
            let rows = try await store.deliveries(subscription: "a", due: Self.at(3_000), limit: limit, strict: false, excluding: excluding)
            let expected = all.filter { !excluding.contains($0.id) }.prefix(limit)
            #expect(rows.map(\.eventID) == expected.map(\.eventID), "\(inFlight.sorted())")
            #expect(rows.map(\.payload) == expected.map(\.payload))
        }
    }

    /// Compositions given at once share transactions (StateStore.assignBatches): each caller returns once its
    /// batches are stored, and a transaction that fails fails each of its callers, without stopping the next ones.
    @Test func compositionsGivenAtOnceAreEachStoredOrEachFail() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        _ = try await Self.enqueueForAll(40, store)
        func unbatched(_ name: String) async throws -> [Delivery] {
            try await store.deliveries(subscription: name, due: Self.at(3_000), limit: 100, strict: true, excluding: [])
                .filter { $0.batchID == nil }
        }
        // Four batches of five for each subscription, each given by its own caller, all at once.
        var given: [(id: String, deliveries: [Delivery])] = []
        for name in Self.names {
            let rows = try await unbatched(name)
            for batch in 0..<4 { given.append(("\(name):batch-\(batch)", Array(rows[batch * 5..<batch * 5 + 5]))) }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for batch in given { group.addTask { try await store.assignBatches([batch]) } }
            try await group.waitForAll()
        }
        for name in Self.names {
            let rows = try await store.deliveries(subscription: name, due: Self.at(3_000), limit: 100, strict: true, excluding: [])
            #expect(rows.prefix(20).map(\.batchID) == (0..<4).flatMap { Array(repeating: "\(name):batch-\($0)", count: 5) })
            #expect(rows.dropFirst(20).allSatisfy { $0.batchID == nil })
        }

        // A transaction that cannot store: every caller gets the error; a composition after it is stored.
        let queue = try DatabaseQueue(path: store.directory + "/" + StateStore.fileName)
        try await queue.write {
            try $0.execute(sql: "CREATE TRIGGER refuse BEFORE INSERT ON composed_batch BEGIN SELECT RAISE(ABORT, 'refused'); END")
        }
        var refused: [(id: String, deliveries: [Delivery])] = []
        for name in Self.names { refused.append(("\(name):refused", Array(try await unbatched(name).prefix(5)))) }
        let failures = await withTaskGroup(of: Bool.self) { group in
            for batch in refused { group.addTask { (try? await store.assignBatches([batch])) == nil } }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(failures == Self.names.count)
        try await queue.write { try $0.execute(sql: "DROP TRIGGER refuse") }
        try await store.assignBatches([refused[0]])
        let first = try await store.deliveries(subscription: "a", due: Self.at(3_000), limit: 100, strict: true, excluding: [])
        #expect(first.filter { $0.batchID == "a:refused" }.count == 5)
        #expect(try await unbatched("b").count == 20)
        #expect(try await store.queueCountProblems() == [])
    }

    @Test func outcomesOfSeveralSubscriptionsInOneCommitKeepTheCountsTrue() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        _ = try await Self.enqueueForAll(20, store)
        func rows(_ name: String) async throws -> [Delivery] {
            try await store.deliveries(subscription: name, due: Self.at(3_000), limit: 1_000, strict: false, excluding: [])
        }

        // Three subscriptions' outcomes in one commit, one of them dead letters, which copy the payload as they go.
        try await store.record([
            DeliveryOutcome(deliveries: try await rows("a"), decision: .delivered, attemptedAt: Self.at(3_100)),
            DeliveryOutcome(deliveries: try await rows("b"), decision: .delivered, attemptedAt: Self.at(3_100)),
            DeliveryOutcome(deliveries: try await rows("c"), decision: .deadLetter(reason: "http_400"), attemptedAt: Self.at(3_100)),
        ])
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 20)
        #expect(try await store.queueDepth("d") == 20)
        #expect(try await store.queueDepth("e") == 20)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM dead_letter WHERE length(payload) > 0") == 20)
        #expect(try await store.queueCountProblems() == [])

        // The last two in one commit: the rows go with them.
        try await store.record([
            DeliveryOutcome(deliveries: try await rows("d"), decision: .delivered, attemptedAt: Self.at(3_200)),
            DeliveryOutcome(deliveries: try await rows("e"), decision: .delivered, attemptedAt: Self.at(3_200)),
        ])
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 0)
        #expect(try await store.queueCountProblems() == [])
    }

    @Test func countsStayTrueThroughRetriesBatchesDeadLettersExpiryReplaysAndPurges() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let events = (0..<20).map { RoutedEvent(event: StateStoreTests.event("evt-\($0)", 1_000 + Int64($0)), subscriptions: ["x", "y"]) }
        _ = try await store.enqueue(source: "s", events: events, cursor: Self.at(2_000), now: Self.at(3_000))

        // A batch composed and retried, a single retried then delivered, one dead-lettered.
        var rows = try await store.deliveries(subscription: "x", due: Self.at(3_000), limit: 20, strict: false, excluding: [])
        try await store.assignBatches([("batch-1", Array(rows[0..<5]))])
        try await store.record([
            DeliveryOutcome(deliveries: Array(rows[0..<5]), decision: .retry(at: Self.at(9_000)), attemptedAt: Self.at(3_100), status: 500),
            DeliveryOutcome(deliveries: [rows[5]], decision: .retry(at: Self.at(4_000)), attemptedAt: Self.at(3_100), status: 502),
            DeliveryOutcome(deliveries: [rows[6]], decision: .deadLetter(reason: "http_400"), attemptedAt: Self.at(3_100), status: 400),
        ])
        #expect(try await store.queueCountProblems() == [])
        #expect(try await store.queueDepth("x") == 19)
        // The retried single is due at 4,000; the batch comes back whole, in its order, under its id.
        rows = try await store.deliveries(subscription: "x", due: Self.at(9_000), limit: 2, strict: false, excluding: [])
        #expect(rows.map(\.eventID).prefix(1) == ["evt-5"])
        #expect(rows[0].attempts == 1)
        let batch = rows.dropFirst()
        #expect(batch.map(\.eventID) == ["evt-0", "evt-1", "evt-2", "evt-3", "evt-4"])
        #expect(Set(batch.map(\.batchID)) == ["batch-1"])
        try await store.record([DeliveryOutcome(deliveries: Array(rows), decision: .delivered, attemptedAt: Self.at(9_100))])
        #expect(try await store.queueCountProblems() == [])

        // The dead letter keeps the bytes and its history, and goes back to the queue once.
        let dead = try await store.deadLetters(subscription: "x")
        #expect(dead.map(\.eventID) == ["evt-6"])
        #expect(dead.first?.status == 400)
        #expect(try await store.replayDeadLetters(subscription: "x", now: Self.at(10_000)) == 1)
        #expect(try await store.queuedEventIDs(subscription: "x").contains("evt-6"))
        #expect(try await store.queueCountProblems() == [])

        // Expiry: everything queued before 5,000 (all but the replayed one) goes to the dead letters unattempted.
        let expired = try await store.expire(subscription: "x", queuedBefore: Self.at(5_000), excluding: [], now: Self.at(11_000))
        #expect(expired == 13)
        #expect(try await store.queuedEventIDs(subscription: "x") == ["evt-6"])
        #expect(try await store.deadLetters(subscription: "x").allSatisfy { $0.reason == "max_age (never attempted)" })
        #expect(try await store.queueCountProblems() == [])

        // A removed subscription's rows go, and with them the event rows no one else needs.
        let purged = try await store.purgeOrphan("y")
        #expect(purged.queued == 20)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 1)
        #expect(try await store.queueCountProblems() == [])
    }

    /// A batch composed from never-attempted rows is one row: its members stay where ingest queued them until it is
    /// answered. Read back (after a restart too) it comes whole, in its order, under its id; a retry, or the maxAge
    /// sweep taking some members, turns it into attempted rows that keep its id.
    @Test func aComposedBatchIsOneRowUntilItsFirstAnswer() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let events = (0..<12).map { RoutedEvent(event: StateStoreTests.event("evt-\($0)", 1_000 + Int64($0)), subscriptions: ["x"]) }
        _ = try await store.enqueue(source: "s", events: events, cursor: Self.at(2_000), now: Self.at(3_000))
        let rows = try await store.deliveries(subscription: "x", due: Self.at(3_000), limit: 12, strict: false, excluding: [])
        // As the planner composes them: in reverse here, so that body order is not read order.
        func composed(_ id: String, _ members: ArraySlice<Delivery>) -> (id: String, deliveries: [Delivery]) {
            (id, members.reversed().enumerated().map { position, row in
                var row = row
                (row.batchID, row.batchPosition) = (id, position)
                return row
            })
        }
        let (a, b, c) = (composed("batch-a", rows[0..<5]), composed("batch-b", rows[5..<10]), composed("batch-c", rows[10..<12]))
        try await store.assignBatches([a, b, c])
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM composed_batch") == 3)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM delivery") == 0)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM delivery_attempt") == 0)
        #expect(try await store.queueDepth("x") == 12)
        #expect(try await store.queueCountProblems() == [])

        // Read by a store opened again, with a limit that cuts the first batch: it comes whole, in its order.
        let reopened = try StateStore.open(directory: directory.path)
        let head = try await reopened.deliveries(subscription: "x", due: Self.at(3_000), limit: 3, strict: false, excluding: [])
        #expect(head.map(\.eventID) == a.deliveries.map(\.eventID))
        #expect(head.map(\.batchID) == Array(repeating: "batch-a", count: 5))
        #expect(head.map(\.batchPosition) == [0, 1, 2, 3, 4])
        // Strict reads see the same batches.
        let strictHead = try await reopened.deliveries(subscription: "x", due: Self.at(3_000), limit: 1, strict: true, excluding: [])
        #expect(strictHead.map(\.eventID) == a.deliveries.map(\.eventID))

        // Delivered: its row goes with its members. Retried: its members become attempted rows under its id.
        try await reopened.record([
            DeliveryOutcome(deliveries: a.deliveries, decision: .delivered, attemptedAt: Self.at(3_100)),
            DeliveryOutcome(deliveries: b.deliveries, decision: .retry(at: Self.at(9_000)), attemptedAt: Self.at(3_100), status: 500),
        ])
        #expect(try await Self.rawCount(reopened, "SELECT count(*) FROM composed_batch") == 1)
        #expect(try await Self.rawCount(reopened, "SELECT count(*) FROM delivery_attempt WHERE batch_id = 'batch-b' AND attempts = 1") == 5)
        #expect(try await reopened.queueCountProblems() == [])
        let retried = try await reopened.deliveries(subscription: "x", due: Self.at(9_000), limit: 1, strict: false, excluding: [])
        #expect(retried.map(\.eventID) == b.deliveries.map(\.eventID))
        #expect(retried.map(\.batchPosition) == [0, 1, 2, 3, 4])

        // The sweep takes one member of the last batch; the other goes on alone under the batch's id.
        let cut = try await reopened.expire(
            subscription: "x", queuedBefore: Self.at(5_000), excluding: Set(b.deliveries.map(\.id)), now: Self.at(11_000), limit: 1)
        #expect(cut == 1)
        #expect(try await Self.rawCount(reopened, "SELECT count(*) FROM composed_batch") == 0)
        #expect(try await reopened.queueCountProblems() == [])
        let rest = try await reopened.deliveries(
            subscription: "x", due: Self.at(3_000), limit: 5, strict: false, excluding: Set(b.deliveries.map(\.id)))
        #expect(rest.count == 1)
        #expect(rest.first?.batchID == "batch-c")
    }

    @Test func rowsQueuedUnderTheOldOutboxAreKeptWhenTheStoreIsUpgraded() async throws {
        // The store as the first release made it, with one event queued for two subscriptions (one of them has
        // tried it once) and another for one.
        let directory = try await StateStoreTests.firstReleaseStore(with: """
            INSERT INTO cursor VALUES ('s', 100000, 100000, 100000);
            INSERT INTO outbox (subscription, event_id, event_time, action, time_value, payload, enqueued_at, next_attempt_at)
                VALUES ('x', 'e1', 1000, 'click', '1000', x'7b2231227d', 5000, 5000),
                       ('x', 'e2', 2000, 'click', '2000', x'7b2232227d', 5000, 5000);
            INSERT INTO outbox (subscription, event_id, event_time, action, time_value, payload, enqueued_at, next_attempt_at,
                                attempts, first_attempt_at, last_attempt_at, last_status, last_error)
                VALUES ('y', 'e1', 1000, 'click', '1000', x'7b2231227d', 5000, 9000, 1, 6000, 6000, 503, 'http_503');
            """)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        #expect(try await store.queuedEventIDs(subscription: "x") == ["e1", "e2"])
        #expect(try await store.queuedEventIDs(subscription: "y") == ["e1"])
        #expect(try await store.queueDepth("x") == 2)
        #expect(try await store.queueDepth("y") == 1)
        #expect(try await store.queueCountProblems() == [])
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 2)
        let retried = try await store.deliveries(subscription: "y", due: Self.at(10_000), limit: 10, strict: false, excluding: [])
        #expect(retried.map(\.attempts) == [1])
        #expect(retried.map(\.nextAttemptAt) == [Self.at(9_000)])
        #expect(retried.map(\.payload) == [Array("{\"1\"}".utf8)])
        #expect(try await store.deliveries(subscription: "y", due: Self.at(8_000), limit: 10, strict: false, excluding: []).isEmpty)
    }

    @Test func seenIDsFromBeforeTheUpgradeStillDedupe() async throws {
        // Seen ids and a queued event as an older release stored them: keyed by id, not by time and id.
        let directory = try await StateStoreTests.firstReleaseStore(with: """
            INSERT INTO cursor VALUES ('s', 100000, 100000, 100000);
            INSERT INTO seen VALUES ('s', 'e1', 1000), ('s', 'e2', 2000);
            INSERT INTO outbox (subscription, event_id, event_time, action, time_value, payload, enqueued_at, next_attempt_at)
                VALUES ('x', 'e2', 2000, 'click', '2000', x'7b2232227d', 5000, 5000);
            """)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let events = [("e1", 1_000), ("e2", 2_000), ("e3", 3_000)].map {
            RoutedEvent(event: StateStoreTests.event($0.0, Int64($0.1)), subscriptions: ["x"])
        }
        let result = try await store.enqueue(source: "s", events: events, cursor: Self.at(100_000), now: Self.at(100_000))
        #expect(result.duplicates == 2)
        #expect(result.newEvents == 1)
        #expect(try await store.queuedEventIDs(subscription: "x") == ["e2", "e3"])
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM seen") == 3)
        #expect(try await store.queueCountProblems() == [])
    }
}
