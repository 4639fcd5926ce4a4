import Foundation
import GRDB
@testable import RelayCore
import Testing

/// A subscription's never-attempted deliveries are a position in its source's stored events (SubscriptionLogs):
/// what it has taken after the position survives a restart, an event older than the position is queued as a row and
/// read in its place, an event row goes once every log routed to it has passed it, and a source's 64th subscription
/// queues rows as before.
@Suite struct SubscriptionLogTests {
    static func at(_ ms: Int64) -> Timestamp { Timestamp(millisecondsSinceEpoch: ms) }

    static func rawCount(_ store: StateStore, _ sql: String) async throws -> Int {
        try await PayloadStorageTests.rawCount(store, sql)
    }

    static func enqueue(_ ids: Range<Int>, for names: [String], _ store: StateStore, time: (Int) -> Int64 = { 1_000 + Int64($0) })
        async throws
    {
        let events = ids.map { RoutedEvent(event: StateStoreTests.event("evt-\($0)", time($0)), subscriptions: names) }
        _ = try await store.enqueue(source: "s", events: events, cursor: at(100_000), now: at(3_000))
    }

    static func queued(_ name: String, _ store: StateStore) async throws -> [Delivery] {
        try await store.deliveries(subscription: name, due: at(3_000), limit: 1_000, strict: false, excluding: [])
    }

    static func deliver(_ rows: some Sequence<Delivery>, _ store: StateStore) async throws {
        try await store.record([DeliveryOutcome(deliveries: Array(rows), decision: .delivered, attemptedAt: at(3_100))])
    }

    @Test func deliveriesTakenAfterTheMarkStayTakenAcrossAReopenAndTheMarkPassesThemLater() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        try await Self.enqueue(0..<20, for: ["x"], store)
        let rows = try await Self.queued("x", store)
        #expect(rows.count == 20)
        #expect(rows.allSatisfy { $0.queuedInLog })
        // The second half answered first: the mark cannot pass the first half, so the second is listed as taken.
        try await Self.deliver(rows[10...], store)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 20)
        #expect(try await Self.rawCount(store, "SELECT length(log_done) FROM subscription_key WHERE name = 'x'") == 10)

        let reopened = try StateStore.open(directory: directory.path)
        #expect(try await Self.queued("x", reopened).map(\.eventID) == rows[..<10].map(\.eventID))
        #expect(try await reopened.queueDepth("x") == 10)
        #expect(try await reopened.queueCountProblems() == [])
        // A second answer for a delivery taken already changes nothing.
        try await Self.deliver(rows[15...], reopened)
        #expect(try await reopened.queueDepth("x") == 10)

        try await Self.deliver(rows[..<10], reopened)
        #expect(try await Self.rawCount(reopened, "SELECT count(*) FROM event") == 0)
        #expect(try await Self.rawCount(reopened, "SELECT length(log_done) FROM subscription_key WHERE name = 'x'") == 0)
        #expect(try await reopened.queueDepth("x") == 0)
        #expect(try await reopened.queueCountProblems() == [])
    }

    @Test func anEventOlderThanTheMarkIsQueuedAsARowAndReadInItsPlace() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        try await Self.enqueue(0..<10, for: ["x"], store)
        try await Self.deliver(try await Self.queued("x", store), store)
        // Later in time than all, and earlier than the mark, which has passed 1,009.
        try await Self.enqueue(10..<12, for: ["x"], store) { $0 == 10 ? 5_000 : 1_005 }
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM delivery") == 1)
        let rows = try await Self.queued("x", store)
        #expect(rows.map(\.eventID) == ["evt-11", "evt-10"])
        #expect(rows.map(\.queuedInLog) == [false, true])
        #expect(try await store.queueCountProblems() == [])
        try await Self.deliver(rows, store)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 0)
        #expect(try await store.queueCountProblems() == [])
    }

    @Test func aRowStaysUntilEveryLogRoutedToItHasPassedIt() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        try await Self.enqueue(0..<20, for: ["x", "y"], store)
        // z takes the last ten only.
        try await Self.enqueue(20..<30, for: ["x", "y", "z"], store)
        try await Self.deliver(try await Self.queued("x", store), store)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 30)
        try await Self.deliver(try await Self.queued("y", store).prefix(15), store)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 15)
        #expect(try await store.queueCountProblems() == [])
        try await Self.deliver(try await Self.queued("y", store), store)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 10)
        try await Self.deliver(try await Self.queued("z", store), store)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 0)
        #expect(try await store.queueCountProblems() == [])
    }

    @Test func aSourcesSixtyFourthSubscriptionQueuesRows() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let names = (0..<64).map { "sub-\($0)" }
        try await Self.enqueue(0..<3, for: names, store)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM subscription_key WHERE log_slot IS NOT NULL") == 63)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM delivery") == 3)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 3)
        for name in names {
            let rows = try await Self.queued(name, store)
            #expect(rows.map(\.eventID) == ["evt-0", "evt-1", "evt-2"], "\(name)")
            try await Self.deliver(rows, store)
        }
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 0)
        #expect(try await store.queueCountProblems() == [])
    }

    @Test func aPurgedSubscriptionsSlotGoesToTheNextWithoutItsRows() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        try await Self.enqueue(0..<10, for: ["x", "y"], store)
        #expect(try await store.purgeOrphan("y").queued == 10)
        #expect(try await store.hasRows(of: "y") == false)
        #expect(try await store.queueCountProblems() == [])
        // z takes y's slot: the rows still stored for x, routed to that slot, are not z's.
        try await Self.enqueue(10..<12, for: ["x", "z"], store)
        #expect(try await Self.rawCount(store, "SELECT log_slot FROM subscription_key WHERE name = 'z'") == 1)
        #expect(try await Self.queued("z", store).map(\.eventID) == ["evt-10", "evt-11"])
        try await Self.deliver(try await Self.queued("x", store), store)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 2)
        try await Self.deliver(try await Self.queued("z", store), store)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 0)
        #expect(try await store.queueCountProblems() == [])
    }

    /// Rows an older release queued stay rows, read in their place among the log's.
    @Test func rowsQueuedBeforeTheUpgradeAreReadWithTheLog() async throws {
        let directory = try await StateStoreTests.firstReleaseStore(with: """
            INSERT INTO cursor VALUES ('s', 100000, 100000, 100000);
            INSERT INTO outbox (subscription, event_id, event_time, action, time_value, payload, enqueued_at, next_attempt_at)
                VALUES ('x', 'old-1', 1000, 'click', '1000', x'7b7d', 2000, 2000), ('x', 'old-2', 1500, 'click', '1500', x'7b7d', 2000, 2000);
            """)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        try await Self.enqueue(0..<3, for: ["x"], store) { 1_200 + Int64($0) * 200 }
        let rows = try await Self.queued("x", store)
        #expect(rows.map(\.eventID) == ["old-1", "evt-0", "evt-1", "old-2", "evt-2"])
        #expect(try await store.queueDepth("x") == 5)
        #expect(try await store.queueCountProblems() == [])
        try await Self.deliver(rows, store)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 0)
        #expect(try await store.queueCountProblems() == [])
    }

    @Test func anEventStampedWellAfterNowIsQueuedAsARow() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        // Stored at 3,000: one an hour later, one a minute later.
        try await Self.enqueue(0..<2, for: ["x"], store) { $0 == 0 ? 3_600_000 : 63_000 }
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM delivery") == 1)
        let rows = try await Self.queued("x", store)
        #expect(rows.map(\.eventID) == ["evt-1", "evt-0"])
        try await Self.deliver(rows, store)
        // The mark is not an hour ahead: the next event goes in the log.
        try await Self.enqueue(2..<3, for: ["x"], store) { _ in 64_000 }
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM delivery") == 0)
        #expect(try await Self.queued("x", store).map(\.queuedInLog) == [true])
    }

    /// A subscription that takes few of a source's events finds its next one at once, however many rows another
    /// subscription's backlog holds: idle, its mark follows the source's newest row; holding a row, a read from the
    /// head looks as far as it takes.
    @Test func aSelectiveSubscriptionIsNotHeldBehindAnotherOnesBacklog() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        try await Self.enqueue(0..<1, for: ["a", "b"], store)
        try await Self.deliver(try await Self.queued("a", store), store)
        for page in 0..<34 {
            try await Self.enqueue(1 + page * 2_000..<1 + (page + 1) * 2_000, for: ["b"], store)
        }
        // Idle, a's mark moved with the rows b's backlog stored.
        #expect(try await Self.rawCount(store, "SELECT log_time FROM subscription_key WHERE name = 'a'") == 1_000 + 68_000)
        try await Self.enqueue(68_001..<68_002, for: ["a", "b"], store)
        #expect(try await Self.queued("a", store).map(\.eventID) == ["evt-68001"])
        // Holding that one, with 68,000 more of b's rows after it: a read from the head, and the check of the next
        // due, find the next.
        for page in 0..<34 {
            try await Self.enqueue(68_002 + page * 2_000..<68_002 + (page + 1) * 2_000, for: ["b"], store)
        }
        try await Self.enqueue(136_002..<136_003, for: ["a", "b"], store)
        #expect(try await Self.queued("a", store).map(\.eventID) == ["evt-68001", "evt-136002"])
        let next = try await store.deliveries(
            subscription: "a", due: Self.at(.max), limit: 1, strict: false, excluding: [try await Self.queued("a", store)[0].id])
        #expect(next.map(\.eventID) == ["evt-136002"])
        #expect(try await store.queueCountProblems() == [])
    }

    /// A request at the head that hangs while thousands after it are delivered: past a limit, the rows the log still
    /// holds before its last done one become rows, and its mark and done list move on.
    @Test func aLogWhoseHeadHangsQueuesItAsARowPastTheDoneLimit() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let count = SubscriptionLogs.doneLimit + 10
        try await Self.enqueue(0..<count, for: ["x", "y"], store)
        let rows = try await store.deliveries(subscription: "x", due: Self.at(3_000), limit: count, strict: false, excluding: [])
        #expect(rows.count == count)
        try await Self.deliver(rows[1..<SubscriptionLogs.doneLimit], store)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM delivery") == 0)
        try await Self.deliver(rows[SubscriptionLogs.doneLimit..<count - 5], store)
        // The head, and nothing else, is a row now; the five after the last delivered are still in the log.
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM delivery") == 1)
        #expect(try await Self.rawCount(store, "SELECT length(log_done) FROM subscription_key WHERE name = 'x'") == 0)
        #expect(try await store.queueDepth("x") == 6)
        #expect(try await store.queueCountProblems() == [])
        let left = try await Self.queued("x", store)
        #expect(left.map(\.eventID) == ["evt-0"] + (count - 5..<count).map { "evt-\($0)" })
        // The hung request's answer arrives, as it was handed out: from the log.
        try await Self.deliver([rows[0]], store)
        try await Self.deliver(try await Self.queued("x", store), store)
        try await Self.deliver(
            try await store.deliveries(subscription: "y", due: Self.at(3_000), limit: count, strict: false, excluding: []), store)
        #expect(try await Self.rawCount(store, "SELECT count(*) FROM event") == 0)
        #expect(try await store.queueCountProblems() == [])
    }

    /// A reader holding the log's first rows (in flight) gets `limit` rows past them: the rows it holds are listed but
    /// not counted, so that a read of one row behind a thousand in flight does not stop at the thousand.
    @Test func aLogReadCountsOnlyTheRowsItsReaderDoesNotHold() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        try await Self.enqueue(0..<30, for: ["x"], store)
        let held = Set(try await Self.queued("x", store).prefix(20).map(\.id))
        let (all, counted) = try await store.read("the log") { db in
            let key = try #require(try DeliveryRows.existingKey(of: "x", db))
            let logs = SubscriptionLogs(db)
            return (try logs.owed(key: key, limit: 5), try logs.owed(key: key, limit: 5, counted: { !held.contains($0) }))
        }
        #expect(all.keys.count == 5)
        #expect(counted.keys.count == 25)
        #expect(counted.keys.filter { !held.contains($0.event) }.count == 5)
        #expect(counted.complete == counted.keys.last, "the scan stopped at the fifth row counted, not at the end")
    }

    @Test func doneRowsRoundTripAsDeltas() {
        let rows: [Int64] = [1, 2, 3, 130, 131, 100_000, 100_001, Int64(Int32.max) * 4]
        #expect(SubscriptionLogs.decode(SubscriptionLogs.encode(rows)) == rows)
        #expect(SubscriptionLogs.encode([7, 8, 9, 10]).count == 4)
        var done = DoneRows(sorted: [2, 4, 6])
        #expect(done.insert([5, 4, 1, 5]) == [1, 5])
        #expect(done.rows == [1, 2, 4, 5, 6])
        #expect(done.index(of: 5) == 3 && done.index(of: 3) == nil)
        done.remove(where: [true, false, false, true, false])
        #expect(done.rows == [2, 4, 6])
    }
}
