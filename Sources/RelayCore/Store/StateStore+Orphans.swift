import GRDB

/// A subscription name with queued events or dead letters that is no longer in the config.
public struct Orphan: Sendable, Equatable {
    public var subscription: String
    public var queued: Int
    public var deadLetters: Int
    /// When it was first found missing from the config: its rows are deleted `orphanRetention` after this.
    public var since: Timestamp

    public init(subscription: String, queued: Int, deadLetters: Int, since: Timestamp) {
        self.subscription = subscription
        self.queued = queued
        self.deadLetters = deadLetters
        self.since = since
    }
}

/// What reconciling the store with a config found.
public struct OrphanReconciliation: Sendable, Equatable {
    /// Every orphan now, with when it became one.
    public var orphans: [Orphan] = []
    /// Names that were orphans and are in the config again: their queued events go out again.
    public var readopted: [String] = []

    public init() {}
}

extension StateStore {
    /// Records which stored names the config no longer has (at start and at each reload): a name found missing is
    /// an orphan from `now` on, a name back in the config is one no longer.
    public func reconcileOrphans(current: [String], now: Timestamp) async throws(StoreError) -> OrphanReconciliation {
        try await write("finding subscriptions no longer in the config") { db in
            let current = Set(current)
            var result = OrphanReconciliation()
            for name in try Self.orphanNames(db) where current.contains(name) {
                try db.execute(sql: "DELETE FROM orphan WHERE subscription = ?", arguments: [name])
                result.readopted.append(name)
            }
            for name in try Self.storedNames(db) where !current.contains(name) {
                try db.execute(
                    sql: "INSERT OR IGNORE INTO orphan (subscription, since) VALUES (?, ?)", arguments: [name, now.millisecondsSinceEpoch])
            }
            result.orphans = try Self.orphans(db)
            return result
        }
    }

    /// The orphans, by name, with their counts (`status`).
    public func orphans() async throws(StoreError) -> [Orphan] {
        try await read("reading orphaned subscriptions") { db in try Self.orphans(db) }
    }

    /// Deletes the queued events, dead letters and history of orphans older than `retention`; returns the names
    /// deleted.
    public func pruneOrphans(olderThan retention: Duration, now: Timestamp) async throws(StoreError) -> [String] {
        let names = try await read("reading orphaned subscriptions") { db in
            try String.fetchAll(
                db, sql: "SELECT subscription FROM orphan WHERE since < ?",
                arguments: [now.advanced(by: .zero - retention).millisecondsSinceEpoch])
        }
        for name in names { _ = try await purgeOrphan(name) }
        return names
    }

    /// Deletes everything stored under a name the config no longer has; returns the queued events and dead
    /// letters deleted.
    public func purgeOrphan(_ subscription: String) async throws(StoreError) -> (queued: Int, deadLetters: Int) {
        // In slices of 10,000 rows, each its own transaction: a queue of a million rows deleted at once would hold
        // the writer, and every poll behind it, for long enough to trip the watchdog.
        var counts = (queued: 0, deadLetters: 0)
        for table in ["delivery", "delivery_attempt"] {
            while true {
                let deleted = try await write("purging the removed subscription \(subscription)") { db in
                    guard let key = try DeliveryRows.existingKey(of: subscription, db) else { return 0 }
                    var rows = try DeliveryRows(db)
                    let slice = try Row.fetchAll(
                        db, sql: "SELECT event_time, event FROM \(table) WHERE subscription = ? LIMIT 10000", arguments: [key])
                    for row in slice { try rows.remove(subscription: subscription, eventTime: row[0], event: row[1]) }
                    try rows.finish()
                    return slice.count
                }
                counts.queued += deleted
                if deleted < 10_000 { break }
            }
        }
        while true {
            let dropped = try await write("purging the removed subscription \(subscription)") { db in
                guard let key = try DeliveryRows.existingKey(of: subscription, db) else { return 0 }
                var rows = try DeliveryRows(db)
                let dropped = try rows.logs.drop(key: key, limit: 10_000)
                try rows.finish()
                // With the rows dropped, as the slices of rows above do: a stop between slices leaves the depth true.
                try db.execute(sql: "UPDATE queue_depth SET n = n - ? WHERE subscription = ?", arguments: [dropped, subscription])
                if dropped < 10_000 { try rows.logs.release(key: key) }
                return dropped
            }
            counts.queued += dropped
            if dropped < 10_000 { break }
        }
        while true {
            let deleted = try await write("purging the removed subscription \(subscription)") { db in
                try db.execute(
                    sql: "DELETE FROM dead_letter WHERE id IN (SELECT id FROM dead_letter WHERE subscription = ? LIMIT 10000)",
                    arguments: [subscription])
                return db.changesCount
            }
            counts.deadLetters += deleted
            if deleted < 10_000 { break }
        }
        try await write("purging the removed subscription \(subscription)") { db in
            for table in ["delivery_stats", "subscription_pause", "subscription_cursor", "join_tail", "replay_request", "orphan", "queue_depth"] {
                try db.execute(sql: "DELETE FROM \(table) WHERE subscription = ?", arguments: [subscription])
            }
            try db.execute(
                sql: "DELETE FROM composed_batch WHERE subscription = (SELECT id FROM subscription_key WHERE name = ?)",
                arguments: [subscription])
        }
        return counts
    }

    /// Whether anything is stored under `subscription`: queued events or dead letters.
    public func hasRows(of subscription: String) async throws(StoreError) -> Bool {
        try await read("reading \(subscription)") { db in
            let key = try DeliveryRows.existingKey(of: subscription, db) ?? -1
            return try Bool.fetchOne(
                db,
                sql: """
                    SELECT EXISTS (SELECT 1 FROM delivery WHERE subscription = ?)
                        OR EXISTS (SELECT 1 FROM delivery_attempt WHERE subscription = ?)
                        OR EXISTS (SELECT 1 FROM dead_letter WHERE subscription = ?)
                    """, arguments: [key, key, subscription]) ?? false
                || !SubscriptionLogs(db).owed(key: key, limit: 1, scanning: .max).keys.isEmpty
        }
    }

    private static func orphanNames(_ db: Database) throws -> [String] {
        try String.fetchAll(db, sql: "SELECT subscription FROM orphan ORDER BY subscription")
    }

    private static func orphans(_ db: Database) throws -> [Orphan] {
        try Row.fetchAll(db, sql: "SELECT subscription, since FROM orphan ORDER BY subscription").map { row in
            let name: String = row["subscription"]
            return Orphan(
                subscription: name,
                queued: try queueDepth(of: name, db),
                deadLetters: try Int.fetchOne(db, sql: "SELECT count(*) FROM dead_letter WHERE subscription = ?", arguments: [name]) ?? 0,
                since: Timestamp(millisecondsSinceEpoch: row["since"]))
        }
    }

    /// Every subscription name with queued events or dead letters, one index seek per name rather than a scan of
    /// a queue that may hold millions of rows.
    private static func storedNames(_ db: Database) throws -> Set<String> {
        var names = Set<String>()
        var after = ""
        while let next = try String.fetchOne(
            db, sql: "SELECT subscription FROM dead_letter WHERE subscription > ? ORDER BY subscription LIMIT 1", arguments: [after])
        {
            names.insert(next)
            after = next
        }
        let logs = SubscriptionLogs(db)
        for (key, name) in try Row.fetchAll(db, sql: "SELECT id, name FROM subscription_key WHERE log_slot IS NOT NULL").map({
            ($0[0] as Int64, $0[1] as String)
        }) where !names.contains(name) {
            if try !logs.owed(key: key, limit: 1, scanning: .max).keys.isEmpty { names.insert(name) }
        }
        for table in ["delivery", "delivery_attempt"] {
            var after: Int64 = -1
            while let next = try Int64.fetchOne(
                db, sql: "SELECT subscription FROM \(table) WHERE subscription > ? ORDER BY subscription LIMIT 1", arguments: [after])
            {
                if let name = try String.fetchOne(db, sql: "SELECT name FROM subscription_key WHERE id = ?", arguments: [next]) {
                    names.insert(name)
                }
                after = next
            }
        }
        return names
    }
}
