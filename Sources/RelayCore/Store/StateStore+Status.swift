import Foundation
import GRDB

/// What `status` shows: per source its cursor, per subscription its queue and outcomes.
public struct StoreStatus: Sendable, Equatable {
    /// One source's position.
    public struct Source: Sendable, Equatable {
        public var name: String
        /// Every event before this has been queued; nil before the first poll.
        public var cursor: Timestamp?
        /// When a page was last committed.
        public var lastPollAt: Timestamp?
        /// The settle mark: every event before it was read again `lookback` after its time.
        public var settled: Timestamp?
        /// Events skipped because their id or time could not be read or placed, by reason.
        public var skipped: [String: Int]

        /// A source with nothing stored yet.
        public init(
            name: String, cursor: Timestamp? = nil, lastPollAt: Timestamp? = nil, settled: Timestamp? = nil,
            skipped: [String: Int] = [:]
        ) {
            self.name = name
            self.cursor = cursor
            self.lastPollAt = lastPollAt
            self.settled = settled
            self.skipped = skipped
        }
    }

    /// One subscription's queue and history.
    public struct Subscription: Sendable, Equatable {
        public var name: String
        public var pending: Int
        /// The event time of the oldest queued event.
        public var oldestPendingEventTime: Timestamp?
        public var deadLetters: Int
        public var delivered: Int
        public var lastSuccessAt: Timestamp?
        public var lastFailureAt: Timestamp?
        public var lastFailure: String?
        /// Set while paused after repeated dead letters.
        public var pause: SubscriptionPause? = nil
        /// Where it stands against its source; nil before its first start.
        public var cursor: SubscriptionCursor? = nil

        /// A subscription with nothing stored yet.
        public init(
            name: String, pending: Int = 0, oldestPendingEventTime: Timestamp? = nil, deadLetters: Int = 0, delivered: Int = 0,
            lastSuccessAt: Timestamp? = nil, lastFailureAt: Timestamp? = nil, lastFailure: String? = nil
        ) {
            self.name = name
            self.pending = pending
            self.oldestPendingEventTime = oldestPendingEventTime
            self.deadLetters = deadLetters
            self.delivered = delivered
            self.lastSuccessAt = lastSuccessAt
            self.lastFailureAt = lastFailureAt
            self.lastFailure = lastFailure
        }
    }

    public var sources: [Source]
    public var subscriptions: [Subscription]

    /// A status of these parts.
    public init(sources: [Source], subscriptions: [Subscription]) {
        self.sources = sources
        self.subscriptions = subscriptions
    }
}

extension StateStore {
    /// The status of the named sources and subscriptions (those in the config), zero where nothing is stored.
    public func status(sources: [String], subscriptions: [String]) async throws(StoreError) -> StoreStatus {
        try await read("reading status") { db in
            StoreStatus(
                sources: try sources.map { try Self.sourceStatus($0, db) },
                subscriptions: try subscriptions.map { try Self.subscriptionStatus($0, db) })
        }
    }

    private static func sourceStatus(_ name: String, _ db: Database) throws -> StoreStatus.Source {
        let row = try Row.fetchOne(
            db, sql: "SELECT position, last_poll_at, settled FROM cursor WHERE source = ?", arguments: [name])
        let position: Int64? = row?["position"]
        let lastPoll: Int64? = row?["last_poll_at"]
        let settled: Int64? = row?["settled"]
        let skipped = try skippedCounts(source: name, db)
        return StoreStatus.Source(
            name: name, cursor: position.map(Timestamp.fromMilliseconds), lastPollAt: lastPoll.map(Timestamp.fromMilliseconds),
            settled: settled.map(Timestamp.fromMilliseconds), skipped: skipped)
    }

    private static func subscriptionStatus(_ name: String, _ db: Database) throws -> StoreStatus.Subscription {
        // The depth kept with every change, not a count: maintenance asks every 10 s, and a queue may hold a million rows.
        let pending = try queueDepth(of: name, db)
        let key = try DeliveryRows.existingKey(of: name, db) ?? -1
        let oldestInLog = try SubscriptionLogs(db).owed(key: key, limit: 1).keys.first?.eventTime
        let oldest = try Int64.fetchOne(
            db,
            sql: """
                SELECT min(t) FROM (SELECT min(event_time) AS t FROM delivery WHERE subscription = ?1
                    UNION ALL SELECT min(event_time) FROM delivery_attempt WHERE subscription = ?1 UNION ALL SELECT ?2)
                """, arguments: [key, oldestInLog])
        let dead = try Int.fetchOne(db, sql: "SELECT count(*) FROM dead_letter WHERE subscription = ?", arguments: [name]) ?? 0
        let stats = try Row.fetchOne(db, sql: "SELECT * FROM delivery_stats WHERE subscription = ?", arguments: [name])
        let delivered: Int = stats?["delivered"] ?? 0
        let lastSuccess: Int64? = stats?["last_success_at"]
        let lastFailureAt: Int64? = stats?["last_failure_at"]
        let lastFailure: String? = stats?["last_failure"]
        var status = StoreStatus.Subscription(
            name: name, pending: pending, oldestPendingEventTime: oldest.map(Timestamp.fromMilliseconds), deadLetters: dead,
            delivered: delivered, lastSuccessAt: lastSuccess.map(Timestamp.fromMilliseconds),
            lastFailureAt: lastFailureAt.map(Timestamp.fromMilliseconds), lastFailure: lastFailure)
        status.pause = try pause(of: name, db)
        status.cursor = try subscriptionCursor(name, db)
        return status
    }

    /// Opens the store only if it exists: `status` and `dead-letters` must not create state.
    public static func openExisting(directory: String) throws(StoreError) -> StateStore? {
        var info = stat()
        guard stat(directory + "/" + fileName, &info) == 0 else { return nil }
        // Upgraded only when no daemon holds it: a running one may be the older release that wrote it.
        return try open(directory: directory, migrating: !StateDirectoryLock.holder(directory: directory).held)
    }
}

extension Timestamp {
    static func fromMilliseconds(_ milliseconds: Int64) -> Timestamp { Timestamp(millisecondsSinceEpoch: milliseconds) }
}
