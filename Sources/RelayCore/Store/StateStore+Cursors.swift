import GRDB

/// Where a subscription stands against its source.
public struct SubscriptionCursor: Sendable, Equatable {
    public enum State: String, Sendable {
        /// Fed by the source's shared poll.
        case current
        /// Reads the API on its own from `position`; the shared poll gives it only late events before that.
        case behind
        /// Fed by the shared poll again, while it reads `[position, tailUntil)` for the events the poll saw before
        /// it joined.
        case joining
    }

    /// Why a subscription is behind.
    public enum Reason: String, Sendable {
        /// New, with `startFrom` before the shared poll.
        case backfill
        /// Its queue reached `maxQueued`.
        case queueFull = "queue_full"
    }

    public var subscription: String
    public var source: String
    public var state: State
    public var position: Timestamp?
    public var tailUntil: Timestamp?
    public var reason: Reason?
    /// When it fell behind.
    public var since: Timestamp?

    /// A cursor as stored.
    public init(
        subscription: String, source: String, state: State, position: Timestamp? = nil, tailUntil: Timestamp? = nil, reason: Reason? = nil,
        since: Timestamp? = nil
    ) {
        (self.subscription, self.source, self.state, self.position) = (subscription, source, state, position)
        (self.tailUntil, self.reason, self.since) = (tailUntil, reason, since)
    }
}

extension StateStore {
    /// Records the subscriptions of a config the first time each appears: `startFrom: now` joins the shared poll,
    /// an earlier time starts behind, at that time. Returns those that start behind.
    public func registerSubscriptions(_ subscriptions: [SubscriptionConfig], now: Timestamp) async throws(StoreError) -> [SubscriptionCursor] {
        try await write("recording new subscriptions") { db in
            var behind: [SubscriptionCursor] = []
            for subscription in subscriptions {
                let position = subscription.startPosition(now: now)
                try db.execute(
                    sql: """
                        INSERT OR IGNORE INTO subscription_cursor (subscription, source, state, position, reason, since)
                        VALUES (?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        subscription.name, subscription.source, position == nil ? "current" : "behind", position?.millisecondsSinceEpoch,
                        position == nil ? nil : SubscriptionCursor.Reason.backfill.rawValue, now.millisecondsSinceEpoch,
                    ])
                if db.changesCount == 1, let position {
                    behind.append(SubscriptionCursor(
                        subscription: subscription.name, source: subscription.source, state: .behind, position: position,
                        reason: .backfill, since: now))
                }
                // A subscription moved to another source starts there as it would anew: from the shared poll.
                try db.execute(
                    sql: "UPDATE subscription_cursor SET source = ?, state = 'current', position = NULL WHERE subscription = ? AND source != ?",
                    arguments: [subscription.source, subscription.name, subscription.source])
            }
            return behind
        }
    }

    /// A subscription's cursor; nil before it is registered.
    public func subscriptionCursor(_ subscription: String) async throws(StoreError) -> SubscriptionCursor? {
        try await read("reading the cursor of \(subscription)") { db in try Self.subscriptionCursor(subscription, db) }
    }

    /// The subscriptions of `source` that are not current.
    public func subscriptionsNotCurrent(source: String) async throws(StoreError) -> [SubscriptionCursor] {
        try await read("reading the subscriptions of \(source)") { db in
            try String.fetchAll(
                db, sql: "SELECT subscription FROM subscription_cursor WHERE source = ? AND state != 'current' ORDER BY subscription",
                arguments: [source]
            ).compactMap { try Self.subscriptionCursor($0, db) }
        }
    }

    /// How many events a subscription has queued.
    public func queueDepth(_ subscription: String) async throws(StoreError) -> Int {
        try await read("reading the queue depth of \(subscription)") { db in
            try Self.queueDepth(of: subscription, db)
        }
    }

    /// A subscription's queued events, as ``DeliveryRows`` keeps the count: a lookup, not a count of its rows.
    static func queueDepth(of subscription: String, _ db: Database) throws -> Int {
        try Int.fetchOne(db.cachedStatement(sql: "SELECT n FROM queue_depth WHERE subscription = ?"), arguments: [subscription]) ?? 0
    }

    static func subscriptionCursor(_ subscription: String, _ db: Database) throws -> SubscriptionCursor? {
        try Row.fetchOne(
            db, sql: "SELECT source, state, position, tail_until, reason, since FROM subscription_cursor WHERE subscription = ?",
            arguments: [subscription]
        ).map { row in
            SubscriptionCursor(
                subscription: subscription, source: row["source"], state: SubscriptionCursor.State(rawValue: row["state"]) ?? .current,
                position: (row["position"] as Int64?).map(Timestamp.fromMilliseconds),
                tailUntil: (row["tail_until"] as Int64?).map(Timestamp.fromMilliseconds),
                reason: (row["reason"] as String?).flatMap(SubscriptionCursor.Reason.init(rawValue:)),
                since: (row["since"] as Int64?).map(Timestamp.fromMilliseconds))
        }
    }

    // MARK: - Catching up

    /// Queues, for a subscription that is behind, what its own read found, and moves its position to `through`,
    /// in one transaction. Stops at the first event that finds its queue full (`limit`), keeping its position
    /// there. Events it has queued already are skipped. Nothing moves if the subscription has meanwhile moved to
    /// another source (a reload).
    public func queueCatchUp(
        subscription: String, source: String, events: [Event], through: Timestamp, limit: Int, now: Timestamp
    ) async throws(StoreError) -> EnqueueResult {
        try await write("queueing \(events.count) events read for \(subscription)") { db in
            // Where its read stands, and what it queued at that millisecond (kept only for the position it was kept at).
            let row = try Row.fetchOne(
                db, sql: "SELECT position, boundary_position, boundary_ids FROM subscription_cursor WHERE subscription = ? AND source = ? AND state = 'behind'",
                arguments: [subscription, source])
            let boundary = (row?["position"] as Int64?).map { position in
                ReadBoundary(
                    position: Timestamp(millisecondsSinceEpoch: position), ids: Self.decodeIDs(row?["boundary_ids"]),
                    keptAt: (row?["boundary_position"] as Int64?).map(Timestamp.fromMilliseconds))
            }
            let fresh = boundary?.unqueued(events) ?? events
            let (result, position) = try Self.queue(fresh, of: source, for: subscription, through: through, upTo: limit, db, now: now)
            let next = boundary?.after(queueing: fresh, result, movedTo: position)
                ?? ReadBoundary(position: position)
            try db.execute(
                sql: """
                    UPDATE subscription_cursor SET position = ?, boundary_position = ?, boundary_ids = ?
                    WHERE subscription = ? AND source = ? AND state = 'behind'
                    """,
                arguments: [next.position.millisecondsSinceEpoch, next.position.millisecondsSinceEpoch, Self.encodeIDs(next.ids), subscription, source])
            if !result.filled.isEmpty {
                try db.execute(
                    sql: "UPDATE subscription_cursor SET reason = ?, since = ? WHERE subscription = ?",
                    arguments: [SubscriptionCursor.Reason.queueFull.rawValue, now.millisecondsSinceEpoch, subscription])
            }
            return result
        }
    }

    /// Joins a subscription that is behind to its source's shared poll, if its own read has reached the seen-id
    /// horizon (from there on, every event the poll has seen is listed in `seen`) and the live cursor has reached its
    /// position. From then on the shared poll feeds it; the events the poll saw at or after its position before now
    /// are listed for the tail read. Returns the cursor as joined, or nil when it cannot join yet.
    public func beginJoin(_ subscription: String) async throws(StoreError) -> SubscriptionCursor? {
        try await write("joining \(subscription) to the shared poll") { db in
            guard let cursor = try Self.subscriptionCursor(subscription, db), cursor.state == .behind, let position = cursor.position,
                let marks = try Self.marks(of: cursor.source, db)
            else { return nil }
            let live = marks.live.millisecondsSinceEpoch
            guard position >= marks.seenHorizon, position.millisecondsSinceEpoch <= live else { return nil }
            try db.execute(
                sql: """
                    INSERT OR IGNORE INTO join_tail (subscription, event_id)
                    SELECT ?, event_id FROM seen WHERE source = ? AND event_time >= ?
                    """,
                arguments: [subscription, cursor.source, position.millisecondsSinceEpoch])
            let newest = try Int64.fetchOne(
                db, sql: "SELECT max(event_time) FROM seen WHERE source = ? AND event_time >= ?",
                arguments: [cursor.source, position.millisecondsSinceEpoch])
            let tailUntil = max(live, (newest ?? live) + 1)
            try db.execute(
                sql: "UPDATE subscription_cursor SET state = 'joining', tail_until = ? WHERE subscription = ?",
                arguments: [tailUntil, subscription])
            return try Self.subscriptionCursor(subscription, db)
        }
    }

    /// Queues, for a joining subscription, the events of its tail read that the shared poll saw before it joined.
    public func queueTail(subscription: String, events: [Event], now: Timestamp) async throws(StoreError) -> EnqueueResult {
        try await write("queueing the tail read for \(subscription)") { db in
            var result = EnqueueResult()
            var rows = try DeliveryRows(db)
            let source = try String.fetchOne(db, sql: "SELECT source FROM subscription_cursor WHERE subscription = ?", arguments: [subscription]) ?? ""
            let take = try FastStatement(db, sql: "DELETE FROM join_tail WHERE subscription = ? AND event_id = ?")
            for event in events where try take.run(.text(subscription), .text(event.id)) == 1 {
                let queued = try rows.queue(StoredEvent(event), source: source, for: subscription, now: now.millisecondsSinceEpoch)
                result.queued += queued
                result.newEvents += 1
            }
            try rows.finish()
            return result
        }
    }

    /// Ends a join: the subscription is current. Returns the events the poll saw that the tail read did not find.
    @discardableResult
    public func finishJoin(_ subscription: String) async throws(StoreError) -> Int {
        try await write("finishing the join of \(subscription)") { db in
            try db.execute(sql: "DELETE FROM join_tail WHERE subscription = ?", arguments: [subscription])
            let missed = db.changesCount
            try db.execute(
                sql: """
                    UPDATE subscription_cursor SET state = 'current', position = NULL, tail_until = NULL, reason = NULL
                    WHERE subscription = ? AND state = 'joining'
                    """, arguments: [subscription])
            return missed
        }
    }

    /// Queues `events` for `subscription` (those still queued are skipped) until its queue holds `limit`; returns
    /// what it did and how far the reader may move: `through`, or the time of the first event that found the queue
    /// full (`filled` names the subscription then).
    static func queue(
        _ events: [Event], of source: String, for subscription: String, through: Timestamp, upTo limit: Int, _ db: Database, now: Timestamp
    ) throws -> (EnqueueResult, position: Timestamp) {
        var result = EnqueueResult()
        var depth = try queueDepth(of: subscription, db)
        var rows = try DeliveryRows(db)
        for event in events {
            if depth >= limit {
                result.filled = [subscription]
                try rows.finish()
                return (result, event.time)
            }
            let queued = try rows.queue(StoredEvent(event), source: source, for: subscription, now: now.millisecondsSinceEpoch)
            depth += queued
            result.queued += queued
            result.newEvents += queued
            result.duplicates += 1 - queued
        }
        try rows.finish()
        return (result, through)
    }
}

/// Within one page's transaction: which subscriptions the shared poll feeds, and whose queues are full.
/// A subscription is a lane, numbered as ``NameNumbers`` numbers it.
struct SubscriptionLanes {
    /// One subscription's state in this transaction.
    struct Lane {
        let name: String
        let limit: Int?
        /// Its position, when it is behind.
        var behind: Int64?
        /// Its queue's depth, read when a limit first needs it.
        var depth: Int?
    }

    private let db: Database
    private let source: String
    private let limits: [String: Int]
    /// Subscriptions behind when the transaction began, by name, with their positions.
    private let behindAtStart: [String: Int64]
    private(set) var lanes: [Lane] = []
    private var numbering = NameNumbers()
    private(set) var filled: [String] = []
    /// The live cursor before this page and where this page moves it.
    private let liveBefore: Int64
    private let liveAfter: Int64

    init(_ db: Database, source: String, limits: [String: Int], liveAfter: Timestamp?) throws {
        self.db = db
        self.source = source
        self.limits = limits
        // Cached statements: this runs for every page the poller commits.
        liveBefore = try Int64.fetchOne(db.cachedStatement(sql: "SELECT position FROM cursor WHERE source = ?"), arguments: [source]) ?? 0
        self.liveAfter = max(liveBefore, liveAfter?.millisecondsSinceEpoch ?? liveBefore)
        var behind: [String: Int64] = [:]
        for row in try Row.fetchAll(
            db.cachedStatement(sql: "SELECT subscription, position FROM subscription_cursor WHERE source = ? AND state = 'behind'"),
            arguments: [source])
        {
            behind[row["subscription"]] = row["position"] ?? .max
        }
        behindAtStart = behind
    }

    /// The lanes of `subscriptions`, in their order.
    mutating func lanes(of subscriptions: [String]) -> [Int] {
        let found = numbering.numbers(of: subscriptions)
        for name in numbering.names[lanes.count...] {
            lanes.append(Lane(name: name, limit: limits[name], behind: behindAtStart[name]))
        }
        return found
    }

    /// Whether the shared poll queues this event for the subscription of `lane`: current, with room, or behind with
    /// the event before its position (a late one its own read has passed). A current one whose queue is full falls
    /// behind here (``SubscriptionCursor/fallBehindPosition(at:liveBefore:liveAfter:)``).
    mutating func admits(_ lane: Int, at time: Timestamp, now: Timestamp) throws -> Bool {
        if let position = lanes[lane].behind { return time.millisecondsSinceEpoch < position }
        guard let limit = lanes[lane].limit else { return true }
        let subscription = lanes[lane].name
        if lanes[lane].depth == nil {
            lanes[lane].depth = try StateStore.queueDepth(of: subscription, db)
        }
        guard lanes[lane].depth! >= limit else { return true }
        // Joining subscriptions are not limited: their tail is short, and falling behind mid-join would lose it.
        let state = try String.fetchOne(db, sql: "SELECT state FROM subscription_cursor WHERE subscription = ?", arguments: [subscription])
        if state == "joining" { return true }
        let t = time.millisecondsSinceEpoch
        let position = SubscriptionCursor.fallBehindPosition(at: t, liveBefore: liveBefore, liveAfter: liveAfter)
        try db.execute(
            sql: """
                INSERT INTO subscription_cursor (subscription, source, state, position, reason, since)
                VALUES (?, ?, 'behind', ?, ?, ?)
                ON CONFLICT (subscription) DO UPDATE SET state = 'behind', position = excluded.position,
                    reason = excluded.reason, since = excluded.since
                """,
            arguments: [subscription, source, position, SubscriptionCursor.Reason.queueFull.rawValue, now.millisecondsSinceEpoch])
        lanes[lane].behind = position
        filled.append(subscription)
        return t < position
    }

    mutating func count(_ lane: Int, _ queued: Int) {
        if lanes[lane].depth != nil { lanes[lane].depth! += queued }
    }
}
