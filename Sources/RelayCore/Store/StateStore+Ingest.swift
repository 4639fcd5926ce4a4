import Foundation
import GRDB

/// What one committed page did.
public struct EnqueueResult: Sendable, Equatable {
    /// Events not seen before.
    public var newEvents = 0
    /// Events already seen (a lookback re-read or a window restart).
    public var duplicates = 0
    /// Outbox rows added, one per (event, matching subscription).
    public var queued = 0

    /// Counts as given.
    public init(newEvents: Int = 0, duplicates: Int = 0, queued: Int = 0) {
        self.newEvents = newEvents
        self.duplicates = duplicates
        self.queued = queued
    }
}

/// An event with the subscriptions it goes to.
public struct RoutedEvent: Sendable {
    /// The event.
    public var event: Event
    /// The subscriptions that match it, possibly none.
    public var subscriptions: [String]

    /// Pairs an event with its subscriptions.
    public init(event: Event, subscriptions: [String]) {
        self.event = event
        self.subscriptions = subscriptions
    }
}

extension StateStore {
    /// The stored cursor of a source: every event before it has been queued.
    public func cursor(of source: String) async throws(StoreError) -> Timestamp? {
        try await read("reading the cursor of \(source)") { db in
            try Int64.fetchOne(db, sql: "SELECT position FROM cursor WHERE source = ?", arguments: [source])
                .map(Timestamp.init(millisecondsSinceEpoch:))
        }
    }

    /// Sets a source's first cursor, unless it has one already; returns the cursor in force.
    public func initializeCursor(of source: String, to position: Timestamp, now: Timestamp) async throws(StoreError)
        -> Timestamp
    {
        try await write("setting the first cursor of \(source)") { db in
            try db.execute(
                sql: "INSERT OR IGNORE INTO cursor (source, position, updated_at) VALUES (?, ?, ?)",
                arguments: [source, position.millisecondsSinceEpoch, now.millisecondsSinceEpoch])
            let stored = try Int64.fetchOne(db, sql: "SELECT position FROM cursor WHERE source = ?", arguments: [source])
            return Timestamp(millisecondsSinceEpoch: stored ?? position.millisecondsSinceEpoch)
        }
    }

    /// Queues a page and moves the cursor in one transaction (invariant 1): new events are marked seen and queued
    /// once per matching subscription; events seen before are skipped (invariant 3). The cursor never moves back.
    public func enqueue(
        source: String, events: [RoutedEvent], cursor: Timestamp, now: Timestamp
    ) async throws(StoreError) -> EnqueueResult {
        try await write("queueing \(events.count) events of \(source)") { db in
            var result = EnqueueResult()
            let markSeen = try FastStatement(db, sql: "INSERT OR IGNORE INTO seen (source, event_id, event_time) VALUES (?, ?, ?)")
            let queue = try FastStatement(
                db,
                sql: """
                    INSERT OR IGNORE INTO outbox
                        (subscription, event_id, event_time, action, time_value, payload, enqueued_at, next_attempt_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """)
            let nowMS = now.millisecondsSinceEpoch
            for routed in events {
                let event = routed.event
                let time = event.time.millisecondsSinceEpoch
                guard try markSeen.run(.text(source), .text(event.id), .integer(time)) == 1 else {
                    result.duplicates += 1
                    continue
                }
                result.newEvents += 1
                guard !routed.subscriptions.isEmpty else { continue }
                // The time as the event wrote it, for the envelope's `timestamp`.
                let timeValue = event.timeValue.description
                for subscription in routed.subscriptions {
                    result.queued += try queue.run(
                        .text(subscription), .text(event.id), .integer(time), .text(event.action), .text(timeValue),
                        .blob(event.raw), .integer(nowMS), .integer(nowMS))
                }
            }
            try db.execute(
                sql: """
                    INSERT INTO cursor (source, position, updated_at, last_poll_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT (source) DO UPDATE SET
                        position = max(position, excluded.position), updated_at = excluded.updated_at,
                        last_poll_at = excluded.last_poll_at
                    """,
                arguments: [source, cursor.millisecondsSinceEpoch, nowMS, nowMS])
            return result
        }
    }

    /// Forgets seen ids older than `before`: no poll reads that far back any more.
    @discardableResult
    public func pruneSeen(source: String, before: Timestamp) async throws(StoreError) -> Int {
        try await write("pruning seen ids of \(source)") { db in
            try db.execute(
                sql: "DELETE FROM seen WHERE source = ? AND event_time < ?",
                arguments: [source, before.millisecondsSinceEpoch])
            return db.changesCount
        }
    }

    /// Outbox rows of a subscription in event-time order, for tests and `status`.
    public func queuedEventIDs(subscription: String) async throws(StoreError) -> [String] {
        try await read("reading the outbox of \(subscription)") { db in
            try String.fetchAll(
                db, sql: "SELECT event_id FROM outbox WHERE subscription = ? ORDER BY event_time, id",
                arguments: [subscription])
        }
    }

    /// How many ids are remembered for a source.
    public func seenCount(source: String) async throws(StoreError) -> Int {
        try await read("counting seen ids") { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM seen WHERE source = ?", arguments: [source]) ?? 0
        }
    }
}
