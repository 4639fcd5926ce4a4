import Logging
import PostgresNIO
import RelayCore

/// Subscriptions that left the config, in PostgreSQL: their queued events and dead letters are kept, not sent,
/// reported by every instance at its start and reload, and deleted once `orphanRetention` has passed (by whichever
/// instance gets there first) or on request.
public struct PostgresOrphans: OrphanStore, PostgresPart {
    let database: RelayDatabase

    public init(_ database: RelayDatabase) {
        self.database = database
    }

    public func reconcileOrphans(current: [String], now: Timestamp) async throws -> OrphanReconciliation {
        try await client.transaction(logger: logger) { connection in
            var result = OrphanReconciliation()
            let readopted = try await connection.query(
                "DELETE FROM \(unescaped: schema).orphan WHERE subscription = ANY(\(current)) RETURNING subscription", logger: logger)
            for try await name in readopted.decode(String.self) { result.readopted.append(name) }
            result.readopted.sort()
            // Each name with rows, one index seek per name rather than a scan of a queue that may be long.
            try await connection.query(
                """
                WITH RECURSIVE queued AS (
                    (SELECT subscription FROM \(unescaped: schema).delivery ORDER BY subscription LIMIT 1)
                    UNION ALL
                    SELECT (SELECT d.subscription FROM \(unescaped: schema).delivery d WHERE d.subscription > queued.subscription
                            ORDER BY d.subscription LIMIT 1)
                    FROM queued WHERE queued.subscription IS NOT NULL
                )
                INSERT INTO \(unescaped: schema).orphan (subscription, since)
                SELECT name, \(now.millisecondsSinceEpoch) FROM (
                    SELECT subscription AS name FROM queued WHERE subscription IS NOT NULL
                    UNION SELECT DISTINCT subscription FROM \(unescaped: schema).dead_letter
                ) AS stored
                WHERE name != ALL(\(current))
                ON CONFLICT (subscription) DO NOTHING
                """, logger: logger)
            result.orphans = try await orphans(on: connection)
            return result
        }
    }

    public func orphans() async throws -> [Orphan] {
        try await client.withConnection { try await orphans(on: $0) }
    }

    public func pruneOrphans(olderThan retention: Duration, now: Timestamp) async throws -> [String] {
        let cutoff = now.advanced(by: .zero - retention).millisecondsSinceEpoch
        var names: [String] = []
        for try await name in try await client.query(
            "SELECT subscription FROM \(unescaped: schema).orphan WHERE since < \(cutoff) ORDER BY subscription", logger: logger
        ).decode(String.self) { names.append(name) }
        for name in names { _ = try await purgeOrphan(name) }
        return names
    }

    /// In slices of 10,000 rows, each its own transaction, so that a long queue's deletion never holds locks long.
    public func purgeOrphan(_ subscription: String) async throws -> (queued: Int, deadLetters: Int) {
        var counts = (queued: 0, deadLetters: 0)
        while true {
            let deleted = try await client.transaction(logger: logger) { connection in
                let rows = try await connection.query(
                    """
                    WITH taken AS (
                        DELETE FROM \(unescaped: schema).delivery WHERE subscription = \(subscription) AND event IN (
                            SELECT event FROM \(unescaped: schema).delivery WHERE subscription = \(subscription) LIMIT 10000)
                        RETURNING event
                    ), released AS (
                        UPDATE \(unescaped: schema).event e SET pending = e.pending - 1 FROM taken WHERE e.id = taken.event RETURNING e.id
                    )
                    SELECT count(*)::int8 FROM released
                    """, logger: logger)
                var count = 0
                for try await value in rows.decode(Int64.self) { count = Int(value) }
                try await connection.query("DELETE FROM \(unescaped: schema).event WHERE pending <= 0", logger: logger)
                return count
            }
            counts.queued += deleted
            if deleted < 10_000 { break }
        }
        while true {
            let rows = try await client.query(
                """
                DELETE FROM \(unescaped: schema).dead_letter WHERE id IN (
                    SELECT id FROM \(unescaped: schema).dead_letter WHERE subscription = \(subscription) LIMIT 10000)
                RETURNING id
                """, logger: logger)
            let deleted = try await count(rows)
            counts.deadLetters += deleted
            if deleted < 10_000 { break }
        }
        try await client.query("DELETE FROM \(unescaped: schema).orphan WHERE subscription = \(subscription)", logger: logger)
        try await client.query("DELETE FROM \(unescaped: schema).subscription_cursor WHERE subscription = \(subscription)", logger: logger)
        try await client.query("DELETE FROM \(unescaped: schema).subscription_pause WHERE subscription = \(subscription)", logger: logger)
        return counts
    }

    private func orphans(on connection: PostgresConnection) async throws -> [Orphan] {
        var found: [Orphan] = []
        for try await (name, since, queued, letters) in try await connection.query(
            """
            SELECT o.subscription, o.since,
                (SELECT count(*)::int8 FROM \(unescaped: schema).delivery d WHERE d.subscription = o.subscription),
                (SELECT count(*)::int8 FROM \(unescaped: schema).dead_letter l WHERE l.subscription = o.subscription)
            FROM \(unescaped: schema).orphan o ORDER BY o.subscription
            """, logger: logger
        ).decode((String, Int64, Int64, Int64).self) {
            found.append(Orphan(subscription: name, queued: Int(queued), deadLetters: Int(letters), since: Timestamp(millisecondsSinceEpoch: since)))
        }
        return found
    }
}

/// The dead-letter commands act on removed subscriptions too (`list` says when their rows go, `purge` takes their
/// queued events with their dead letters), as on SQLite.
extension PostgresDeadLetters: OrphanStore {
    public func reconcileOrphans(current: [String], now: Timestamp) async throws -> OrphanReconciliation {
        try await PostgresOrphans(database).reconcileOrphans(current: current, now: now)
    }

    public func orphans() async throws -> [Orphan] { try await PostgresOrphans(database).orphans() }

    public func pruneOrphans(olderThan retention: Duration, now: Timestamp) async throws -> [String] {
        try await PostgresOrphans(database).pruneOrphans(olderThan: retention, now: now)
    }

    public func purgeOrphan(_ subscription: String) async throws -> (queued: Int, deadLetters: Int) {
        try await PostgresOrphans(database).purgeOrphan(subscription)
    }
}
