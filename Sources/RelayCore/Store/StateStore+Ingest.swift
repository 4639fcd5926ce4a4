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
    /// Subscriptions whose queue this page filled: they stopped queueing and fell behind.
    public var filled: [String] = []
    /// What the shared poll's commit queued, per subscription, as the dispatchers would read it back: handed to
    /// them in memory, so that a subscription that is caught up does not read the store for what it was just given.
    public var handOff: [String: [Delivery]] = [:]
    /// The longest queue of the subscriptions the pages went to, once the commit was done, when the store says (0
    /// when it does not): a poller whose deliveries are behind has no reason to read faster than one commit a page.
    public var longestQueue = 0

    public static func == (lhs: EnqueueResult, rhs: EnqueueResult) -> Bool {
        (lhs.newEvents, lhs.duplicates, lhs.queued, lhs.filled) == (rhs.newEvents, rhs.duplicates, rhs.queued, rhs.filled)
    }

    /// Adds what a later page of the same commit did.
    mutating func add(_ later: EnqueueResult) {
        newEvents += later.newEvents
        duplicates += later.duplicates
        queued += later.queued
        filled += later.filled.filter { !filled.contains($0) }
        handOff.merge(later.handOff) { $0 + $1 }
    }

    /// Counts as given.
    public init(newEvents: Int = 0, duplicates: Int = 0, queued: Int = 0) {
        self.newEvents = newEvents
        self.duplicates = duplicates
        self.queued = queued
    }
}

/// One page as the poller commits it: its events with their subscriptions, how it moves the marks, and what the
/// decoder skipped.
public struct PageCommit: Sendable {
    public var events: [RoutedEvent]
    public var advance: MarkAdvance
    public var skipped: [EventPageDecoder.SkipReason: Int]

    /// A page's commit as given.
    public init(events: [RoutedEvent], advance: MarkAdvance, skipped: [EventPageDecoder.SkipReason: Int] = [:]) {
        self.events = events
        self.advance = advance
        self.skipped = skipped
    }
}

/// Where a source stands. The live edge reads forward from `live`; the settle edge has read everything before
/// `settled` once more, `lookback` after its time; seen ids are complete from `seenHorizon` on, and no read starts
/// before it. `seenHorizon ≤ settled ≤ live` once the settle edge has caught up.
public struct SourceMarks: Sendable, Equatable {
    /// Every event before this that was visible at the last live poll is queued. Never past the API's now.
    public var live: Timestamp
    /// Every event before this was read at least `lookback` after its time, or lies before the source's start.
    public var settled: Timestamp
    /// Seen ids are kept from here on; reads never start before it.
    public var seenHorizon: Timestamp

    /// Marks as given.
    public init(live: Timestamp, settled: Timestamp, seenHorizon: Timestamp) {
        self.live = live
        self.settled = settled
        self.seenHorizon = seenHorizon
    }
}

/// How one committed page moves a source's marks. Marks never move back.
public struct MarkAdvance: Sendable, Equatable {
    /// The live cursor moves up to this.
    public var live: Timestamp?
    /// The settle mark moves up to this...
    public var settled: Timestamp?
    /// ...but only if it stands at or after this already: a live walk that began there read the range between
    /// contiguously, so it settles it; one that began after the mark would leave a gap.
    public var settledOnlyFrom: Timestamp?

    /// An advance of the given marks.
    public init(live: Timestamp? = nil, settled: Timestamp? = nil, settledOnlyFrom: Timestamp? = nil) {
        self.live = live
        self.settled = settled
        self.settledOnlyFrom = settledOnlyFrom
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
    /// The stored live cursor of a source: every event before it has been queued.
    public func cursor(of source: String) async throws(StoreError) -> Timestamp? {
        try await read("reading the cursor of \(source)") { db in
            try Int64.fetchOne(db, sql: "SELECT position FROM cursor WHERE source = ?", arguments: [source])
                .map(Timestamp.init(millisecondsSinceEpoch:))
        }
    }

    /// A source's marks, or nil before its first start.
    public func marks(of source: String) async throws(StoreError) -> SourceMarks? {
        try await read("reading the marks of \(source)") { db in try Self.marks(of: source, db) }
    }

    static func marks(of source: String, _ db: Database) throws -> SourceMarks? {
        guard let row = try Row.fetchOne(
            db, sql: "SELECT position, settled, seen_horizon FROM cursor WHERE source = ?", arguments: [source])
        else { return nil }
        let live = Timestamp(millisecondsSinceEpoch: row["position"])
        let settled = (row["settled"] as Int64?).map(Timestamp.init(millisecondsSinceEpoch:)) ?? live
        let horizon = (row["seen_horizon"] as Int64?).map(Timestamp.init(millisecondsSinceEpoch:)) ?? settled
        return SourceMarks(live: live, settled: settled, seenHorizon: horizon)
    }

    /// Sets a source's first marks at `position`, unless it has some; returns the marks in force. A cursor stored
    /// before the settle edge existed gets a settle mark `lookback` behind it, which is what its polls re-read.
    public func initializeMarks(of source: String, at position: Timestamp, lookback: Duration, now: Timestamp)
        async throws(StoreError) -> SourceMarks
    {
        try await write("setting the first cursor of \(source)") { db in
            let first = position.millisecondsSinceEpoch
            try db.execute(
                sql: """
                    INSERT OR IGNORE INTO cursor (source, position, updated_at, settled, seen_horizon)
                    VALUES (?, ?, ?, ?, ?)
                    """,
                arguments: [source, first, now.millisecondsSinceEpoch, first, first - 1])
            let behind = Timestamp(millisecondsSinceEpoch: 0).advanced(by: lookback).millisecondsSinceEpoch
            try db.execute(
                sql: "UPDATE cursor SET settled = position - ? WHERE source = ? AND settled IS NULL",
                arguments: [behind, source])
            try db.execute(
                sql: "UPDATE cursor SET seen_horizon = settled - 1 WHERE source = ? AND seen_horizon IS NULL",
                arguments: [source])
            return try Self.marks(of: source, db)!
        }
    }

    /// Queues a page and moves the live cursor to `cursor`; see ``enqueue(source:events:advance:skipped:now:)``.
    public func enqueue(
        source: String, events: [RoutedEvent], cursor: Timestamp, now: Timestamp
    ) async throws(StoreError) -> EnqueueResult {
        try await enqueue(source: source, events: events, advance: MarkAdvance(live: cursor), now: now)
    }

    /// Queues a page and moves the marks in one transaction (invariant 1): new events are marked seen and queued
    /// once per matching subscription; events seen before are skipped (invariant 3). Events the decoder skipped
    /// are counted by reason, for `status`. Marks never move back.
    ///
    /// A subscription that is behind gets only the late events before its own position (it reads the rest
    /// itself); one whose queue holds `queueLimits[name]` events stops here and falls behind at this event.
    public func enqueue(
        source: String, events: [RoutedEvent], advance: MarkAdvance, skipped: [EventPageDecoder.SkipReason: Int] = [:],
        queueLimits: [String: Int] = [:], now: Timestamp
    ) async throws(StoreError) -> EnqueueResult {
        let page = PageCommit(events: events, advance: advance, skipped: skipped)
        var (result, stored) = try await write("queueing \(events.count) events of \(source)") { db in
            var stored = StoredRows()
            let result = try Self.enqueue(page, source: source, queueLimits: queueLimits, now: now, stored: &stored, db)
            return (result, stored)
        }
        result.handOff = stored.deliveries(of: [page], now: now)
        return result
    }

    /// Commits pages in one transaction, each as its own commit would: a poller that reads faster than one commit
    /// a page pays for one transaction and one WAL commit per group of pages.
    public func enqueue(
        source: String, pages: [PageCommit], queueLimits: [String: Int] = [:], now: Timestamp
    ) async throws(StoreError) -> EnqueueResult {
        var (result, stored) = try await write("queueing \(pages.count) pages of \(source)") { db in
            var result = EnqueueResult()
            var stored = StoredRows()
            for page in pages {
                result.add(try Self.enqueue(page, source: source, queueLimits: queueLimits, now: now, stored: &stored, db))
            }
            var numbering = NameNumbers()
            for routed in pages.lazy.flatMap(\.events) { _ = numbering.numbers(of: routed.subscriptions) }
            let fed = numbering.names
            if !fed.isEmpty {
                // Cached: one text per number of subscriptions, and a compile was a percent of the relay's time.
                result.longestQueue = try Int.fetchOne(
                    db.cachedStatement(
                        sql: "SELECT max(n) FROM queue_depth WHERE subscription IN (\(fed.map { _ in "?" }.joined(separator: ",")))"),
                    arguments: StatementArguments(fed)) ?? 0
            }
            return (result, stored)
        }
        result.handOff = stored.deliveries(of: pages, now: now)
        return result
    }

    private static func enqueue(
        _ page: PageCommit, source: String, queueLimits: [String: Int], now: Timestamp, stored: inout StoredRows,
        _ db: Database
    ) throws -> EnqueueResult {
        stored.nextPage()
        let (events, advance, skipped) = (page.events, page.advance, page.skipped)
        var result = EnqueueResult()
        var lanes = try SubscriptionLanes(db, source: source, limits: queueLimits, liveAfter: advance.live)
        let markSeen = try FastStatement(db, sql: "INSERT OR IGNORE INTO seen (source, event_id, event_time) VALUES (?, ?, ?)")
        var rows = try DeliveryRows(db)
        let nowMS = now.millisecondsSinceEpoch
        var (admitted, admittedNames): ([Int], [String]) = ([], [])
        for (index, routed) in events.enumerated() {
            let event = routed.event
            let time = event.time.millisecondsSinceEpoch
            guard try markSeen.run(.text(source), .text(event.id), .integer(time)) == 1 else {
                result.duplicates += 1
                continue
            }
            result.newEvents += 1
            admitted.removeAll(keepingCapacity: true)
            admittedNames.removeAll(keepingCapacity: true)
            for lane in lanes.lanes(of: routed.subscriptions) where try lanes.admits(lane, at: event.time, now: now) {
                admitted.append(lane)
                admittedNames.append(lanes.lanes[lane].name)
            }
            guard !admitted.isEmpty else { continue }
            let storedEvent = StoredEvent(event)
            let (row, queued, inLogs) = try rows.queueNew(storedEvent, source: source, for: admittedNames, now: nowMS)
            for (position, lane) in admitted.enumerated() {
                let count = queued?[position] ?? 1
                lanes.count(lane, count)
                result.queued += count
            }
            // A new event row is queued for every subscription admitted.
            if let row {
                stored.add(
                    event: index, row: row, timeValue: storedEvent.timeValue,
                    for: admitted.count == routed.subscriptions.count ? nil : admittedNames, inLogs: inLogs)
            }
        }
        try rows.finish()
        try rows.logs.skipIdle(source: source)
        result.filled = lanes.filled
        for (reason, count) in skipped {
            try db.execute(
                sql: """
                    INSERT INTO skipped (source, reason, count, last_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT (source, reason) DO UPDATE SET count = count + excluded.count, last_at = excluded.last_at
                    """,
                arguments: [source, reason.rawValue, count, nowMS])
        }
        // Cached: one per page the poller commits.
        try db.cachedStatement(
            sql: """
                UPDATE cursor SET
                    position = max(position, coalesce(:live, position)),
                    settled = CASE WHEN :settled IS NOT NULL AND settled >= coalesce(:from, settled)
                        THEN max(settled, :settled) ELSE settled END,
                    updated_at = :now, last_poll_at = :now
                WHERE source = :source
                """
        ).execute(
            arguments: [
                "live": advance.live?.millisecondsSinceEpoch, "settled": advance.settled?.millisecondsSinceEpoch,
                "from": advance.settledOnlyFrom?.millisecondsSinceEpoch, "now": nowMS, "source": source,
            ])
        if db.changesCount == 0 {
            // A store written by a test or a tool without initializing the source first.
            let live = advance.live?.millisecondsSinceEpoch ?? 0
            try db.execute(
                sql: """
                    INSERT INTO cursor (source, position, updated_at, last_poll_at, settled, seen_horizon)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """,
                arguments: [source, live, nowMS, nowMS, live, live - 1])
        }
        return result
    }

    /// Moves the settle mark up to `position` without reading: with `lookback: "0s"` there is no settle edge, and
    /// the mark follows the live cursor so that seen ids can still be pruned.
    public func advanceSettled(source: String, to position: Timestamp) async throws(StoreError) {
        try await write("moving the settle mark of \(source)") { db in
            try db.execute(
                sql: "UPDATE cursor SET settled = max(settled, min(position, ?)) WHERE source = ?",
                arguments: [position.millisecondsSinceEpoch, source])
        }
    }

    /// Forgets seen ids that no read can return again: those before the earlier of the live cursor and the settle
    /// mark, less a second. The horizon is stored, so a changed `lookback` never makes a read start before it.
    @discardableResult
    public func pruneSeen(source: String) async throws(StoreError) -> Int {
        try await write("pruning seen ids of \(source)") { db in
            guard let marks = try Self.marks(of: source, db) else { return 0 }
            let horizon = min(marks.live, marks.settled).advanced(by: .seconds(-1))
            return try Self.prune(source: source, before: horizon, db)
        }
    }

    /// Forgets seen ids older than `before` and raises the stored horizon to it.
    @discardableResult
    public func pruneSeen(source: String, before: Timestamp) async throws(StoreError) -> Int {
        try await write("pruning seen ids of \(source)") { db in try Self.prune(source: source, before: before, db) }
    }

    private static func prune(source: String, before: Timestamp, _ db: Database) throws -> Int {
        try db.execute(
            sql: "UPDATE cursor SET seen_horizon = max(coalesce(seen_horizon, ?), ?) WHERE source = ?",
            arguments: [before.millisecondsSinceEpoch, before.millisecondsSinceEpoch, source])
        let horizon = try Int64.fetchOne(db, sql: "SELECT seen_horizon FROM cursor WHERE source = ?", arguments: [source])
            ?? before.millisecondsSinceEpoch
        try db.execute(
            sql: "DELETE FROM seen WHERE source = ? AND event_time < ?", arguments: [source, horizon])
        return db.changesCount
    }

    /// Events skipped because the relay could not read them, by reason, since the state was created.
    public func skippedCounts(source: String) async throws(StoreError) -> [String: Int] {
        try await read("reading skipped events of \(source)") { db in try Self.skippedCounts(source: source, db) }
    }

    static func skippedCounts(source: String, _ db: Database) throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT reason, count FROM skipped WHERE source = ?", arguments: [source]) {
            counts[row["reason"]] = row["count"]
        }
        return counts
    }

    /// The events queued for a subscription in event-time order, for tests and `status`.
    public func queuedEventIDs(subscription: String) async throws(StoreError) -> [String] {
        try await read("reading the queue of \(subscription)") { db in
            guard let key = try DeliveryRows.existingKey(of: subscription, db) else { return [] }
            var rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT d.event_time, d.event, e.event_id FROM (SELECT event_time, event FROM delivery WHERE subscription = :key
                        UNION ALL SELECT event_time, event FROM delivery_attempt WHERE subscription = :key) d
                    JOIN event e ON e.id = d.event
                    """, arguments: ["key": key]
            ).map { (time: $0[0] as Int64, event: $0[1] as Int64, id: $0[2] as String) }
            let logs = SubscriptionLogs(db)
            var from: QueuedKey?
            while true {
                let owed = try logs.owed(key: key, from: from, limit: 10_000)
                for owedKey in owed.keys {
                    let id = try String.fetchOne(db, sql: "SELECT event_id FROM event WHERE id = ?", arguments: [owedKey.event]) ?? ""
                    rows.append((owedKey.eventTime, owedKey.event, id))
                }
                guard let complete = owed.complete else { break }
                from = complete.next
            }
            return rows.sorted { ($0.time, $0.event) < ($1.time, $1.event) }.map(\.id)
        }
    }

    /// How many ids are remembered for a source.
    public func seenCount(source: String) async throws(StoreError) -> Int {
        try await read("counting seen ids") { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM seen WHERE source = ?", arguments: [source]) ?? 0
        }
    }
}

/// The event rows a commit stored for its pages' new events, with the subscriptions each was queued for: what the
/// poller hands to the dispatchers, as deliveries built once the commit is done. Building them inside it, a delivery
/// and a dictionary update per subscription and event, was writer time that no other commit could use.
struct StoredRows: Sendable {
    private var pages: [[(event: Int, row: Int64, timeValue: String, subscriptions: [String]?, inLogs: Bool)]] = []

    mutating func nextPage() { pages.append([]) }

    /// The page's event at `event` was stored as `row`, its time as `timeValue` (written once, for the row), for
    /// `subscriptions` (nil: all it was routed to), in their logs if `inLogs`.
    mutating func add(event: Int, row: Int64, timeValue: String, for subscriptions: [String]?, inLogs: Bool) {
        pages[pages.count - 1].append((event, row, timeValue, subscriptions, inLogs))
    }

    /// The deliveries queued, per subscription, in queue order; `pages` as committed.
    func deliveries(of committed: [PageCommit], now: Timestamp) -> [String: [Delivery]] {
        // A list per subscription, by its number.
        var numbering = NameNumbers()
        var lists: [[Delivery]] = []
        for (page, stored) in zip(committed, pages) {
            for (index, row, timeValue, subscriptions, inLogs) in stored {
                let routed = page.events[index]
                let event = routed.event
                let numbers = numbering.numbers(of: subscriptions ?? routed.subscriptions)
                while lists.count < numbering.names.count { lists.append([]) }
                // One delivery, its event's part shared by every subscription's copy.
                var delivery = Delivery(
                    id: row, subscription: "", eventID: event.id, eventTime: event.time, action: event.action,
                    timeValue: timeValue, payload: event.raw, attempts: 0, firstAttemptAt: nil,
                    batchID: nil, nextAttemptAt: now)
                delivery.queuedInLog = inLogs
                for number in numbers {
                    delivery.subscription = numbering.names[number]
                    lists[number].append(delivery)
                }
            }
        }
        return Dictionary(uniqueKeysWithValues: zip(numbering.names, lists))
    }
}
