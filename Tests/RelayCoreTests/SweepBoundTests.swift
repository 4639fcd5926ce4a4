import Foundation
import GRDB
@testable import RelayCore
import Testing

/// The maxAge sweep reads only the event rows stored before its cutoff, found by bisecting row ids (ids grow with
/// store time), and among them takes the ones still queued from before the cutoff.
@Suite struct SweepBoundTests {
    static func at(_ ms: Int64) -> Timestamp { Timestamp(millisecondsSinceEpoch: ms) }

    @Test func theBoundIsTheFirstRowStoredAtOrAfterTheTime() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try StateStore.open(directory: directory.path)
        let queue = try DatabaseQueue(path: directory.appendingPathComponent(StateStore.fileName).path)
        try await queue.write { db in
            // Ids 1-1000 stored at 10 ms steps, with gaps where rows went, and runs of equal times.
            try db.execute(sql: """
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
                INSERT INTO event (id, source, event_id, event_time, action, time_value, payload, queued_at, pending, stored_at)
                SELECT i, 's', 'e' || i, i, 'x', '0', x'7b7d', (i / 4) * 10, 1, (i / 4) * 10 FROM n;
                DELETE FROM event WHERE id % 7 = 0 OR id BETWEEN 400 AND 450;
                """)
        }
        for time: Int64 in [-5, 0, 5, 10, 995, 1000, 1005, 2480, 2490, 2500, 2501, 9999] {
            let (below, storedBefore) = try await queue.read { db in
                let bound = try StateStore.firstEventStored(since: time, db)
                return (try Int64.fetchAll(db, sql: "SELECT id FROM event WHERE id < ? ORDER BY id", arguments: [bound]),
                        try Int64.fetchAll(db, sql: "SELECT id FROM event WHERE stored_at < ? ORDER BY id", arguments: [time]))
            }
            #expect(below == storedBefore, "at \(time)")
        }
        let empty = try DatabaseQueue(path: directory.appendingPathComponent("empty.sqlite").path)
        try await empty.write { try $0.execute(sql: "CREATE TABLE event (id INTEGER PRIMARY KEY, stored_at INTEGER)") }
        #expect(try await empty.read { try StateStore.firstEventStored(since: 5, $0) } <= 1)
    }

    @Test func rowsStoredAfterTheCutoffOrQueuedAgainAfterItStayAndStoreTimesNeverGoBack() async throws {
        let directory = StateStoreTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        func events(_ range: Range<Int>) -> [RoutedEvent] {
            range.map { RoutedEvent(event: StateStoreTests.event("evt-\($0)", 1_000 + Int64($0)), subscriptions: ["x", "y"]) }
        }
        _ = try await store.enqueue(source: "s", events: events(0..<5), cursor: Self.at(2_000), now: Self.at(3_000))
        _ = try await store.enqueue(source: "s", events: events(5..<10), cursor: Self.at(2_000), now: Self.at(8_000))
        // The clock steps back: these are stored, and queued, at the newest row's time, not before it.
        _ = try await store.enqueue(source: "s", events: events(10..<12), cursor: Self.at(2_000), now: Self.at(4_000))
        // evt-2, stored at 3,000, dead for x and replayed at 9,000: queued again, its row still stored for y.
        let queue = try DatabaseQueue(path: directory.appendingPathComponent(StateStore.fileName).path)
        try await queue.write {
            try $0.execute(sql: "INSERT INTO subscription_cursor (subscription, source, state) VALUES ('x', 's', 'current')")
        }
        let second = try await store.deliveries(subscription: "x", due: Self.at(9_000), limit: 20, strict: false, excluding: [])
            .filter { $0.eventID == "evt-2" }
        try await store.record([DeliveryOutcome(deliveries: second, decision: .deadLetter(reason: "http_410"), attemptedAt: Self.at(8_500))])
        #expect(try await store.replayDeadLetters(subscription: "x", now: Self.at(9_000)) == 1)

        let expired = try await store.expire(subscription: "x", queuedBefore: Self.at(5_000), excluding: [], now: Self.at(11_000))
        #expect(try await queue.read { try Int64.fetchAll($0, sql: "SELECT DISTINCT stored_at FROM event ORDER BY 1") } == [3_000, 8_000])
        #expect(expired == 4)
        #expect(try await store.queuedEventIDs(subscription: "x") == ["evt-2", "evt-5", "evt-6", "evt-7", "evt-8", "evt-9", "evt-10", "evt-11"])
        #expect(try await store.queueCountProblems() == [])
    }
}
