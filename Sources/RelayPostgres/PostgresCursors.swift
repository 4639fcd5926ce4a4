import Logging
import PostgresNIO
import RelayCore

/// Subscription cursors in PostgreSQL (docs/architecture.md, "Subscription cursors"), with SQLite's rules: a new
/// subscription with `startFrom` in the past, or one whose queue filled, reads the API on its own under its
/// source's lease, and joins the shared poll when its read reaches it. Every write but the registration of a
/// config's subscriptions is fenced by the lease of the subscription's source.
public struct PostgresCursors: Sendable, PostgresPart {
    let database: RelayDatabase
    private let leases: PostgresLeases

    public init(_ database: RelayDatabase) {
        self.database = database
        leases = PostgresLeases(database)
    }

    /// Records the subscriptions of a config the first time each appears (any instance may, at its start or
    /// reload: a name already recorded is left as it is); returns those that start behind.
    public func registerSubscriptions(_ subscriptions: [SubscriptionConfig], now: Timestamp) async throws -> [SubscriptionCursor] {
        try await client.transaction(logger: logger) { connection in
            var behind: [SubscriptionCursor] = []
            for subscription in subscriptions {
                let position = subscription.startPosition(now: now)
                let reason = position == nil ? nil : SubscriptionCursor.Reason.backfill.rawValue
                let added = try await connection.query(
                    """
                    INSERT INTO \(unescaped: schema).subscription_cursor (subscription, source, state, position, reason, since)
                    VALUES (\(subscription.name), \(subscription.source), \(position == nil ? "current" : "behind"), \(position?.millisecondsSinceEpoch),
                            \(reason), \(now.millisecondsSinceEpoch))
                    ON CONFLICT (subscription) DO NOTHING
                    RETURNING subscription
                    """, logger: logger)
                if try await count(added) == 1, let position {
                    behind.append(SubscriptionCursor(
                        subscription: subscription.name, source: subscription.source, state: .behind, position: position, reason: .backfill,
                        since: now))
                }
                // A subscription moved to another source starts there as it would anew: from the shared poll.
                try await connection.query(
                    """
                    UPDATE \(unescaped: schema).subscription_cursor SET source = \(subscription.source), state = 'current', position = NULL
                    WHERE subscription = \(subscription.name) AND source != \(subscription.source)
                    """, logger: logger)
            }
            return behind
        }
    }

    public func subscriptionCursor(_ subscription: String) async throws -> SubscriptionCursor? {
        try await cursors("SELECT \(unescaped: Self.columns) FROM \(unescaped: schema).subscription_cursor WHERE subscription = \(subscription)").first
    }

    public func subscriptionsNotCurrent(source: String) async throws -> [SubscriptionCursor] {
        try await cursors(
            """
            SELECT \(unescaped: Self.columns) FROM \(unescaped: schema).subscription_cursor
            WHERE source = \(source) AND state != 'current' ORDER BY subscription
            """)
    }

    /// Queues a behind subscription's own read under `lease` and moves its position to `through` (or to where its
    /// queue filled).
    public func queueCatchUp(
        subscription: String, source: String, events: [Event], through: Timestamp, limit: Int, now: Timestamp, by lease: Lease
    ) async throws -> EnqueueResult {
        try await leases.fenced(by: lease) { connection in
            // Where its read stands, and what it queued at that millisecond (kept only for the position it was kept at).
            var boundary: ReadBoundary?
            for try await (position, keptAt, ids) in try await connection.query(
                """
                SELECT position, boundary_position, boundary_ids FROM \(unescaped: schema).subscription_cursor
                WHERE subscription = \(subscription) AND source = \(source) AND state = 'behind' FOR UPDATE
                """, logger: logger
            ).decode((Int64?, Int64?, [String]).self) {
                boundary = position.map {
                    ReadBoundary(position: Timestamp(millisecondsSinceEpoch: $0), ids: Set(ids), keptAt: keptAt.map { Timestamp(millisecondsSinceEpoch: $0) })
                }
            }
            let fresh = boundary?.unqueued(events) ?? events
            let (result, position) = try await PostgresDeliveries(database).queue(
                fresh, of: source, for: subscription, through: through, upTo: limit, now: now, on: connection)
            let next = boundary?.after(queueing: fresh, result, movedTo: position) ?? ReadBoundary(position: position)
            try await connection.query(
                """
                UPDATE \(unescaped: schema).subscription_cursor SET position = \(next.position.millisecondsSinceEpoch),
                    boundary_position = \(next.position.millisecondsSinceEpoch), boundary_ids = \(next.ids.sorted())
                WHERE subscription = \(subscription) AND source = \(source) AND state = 'behind'
                """, logger: logger)
            if !result.filled.isEmpty {
                try await connection.query(
                    """
                    UPDATE \(unescaped: schema).subscription_cursor SET reason = \(SubscriptionCursor.Reason.queueFull.rawValue),
                        since = \(now.millisecondsSinceEpoch)
                    WHERE subscription = \(subscription)
                    """, logger: logger)
            }
            return result
        }
    }

    /// Joins a behind subscription of the source `lease` holds to its shared poll, if its read has reached the
    /// seen-id horizon and the live cursor its position; nil when it cannot join yet.
    public func beginJoin(_ subscription: String, by lease: Lease) async throws -> SubscriptionCursor? {
        try await leases.fenced(by: lease) { connection in
            let rows = try await connection.query(
                """
                SELECT s.position, c.position, c.seen_horizon, c.settled, s.source FROM \(unescaped: schema).subscription_cursor s
                JOIN \(unescaped: schema).cursor c ON c.source = s.source
                WHERE s.subscription = \(subscription) AND s.state = 'behind' FOR UPDATE OF s
                """, logger: logger)
            var found: (position: Int64?, live: Int64, horizon: Int64?, settled: Int64?, source: String)?
            for try await row in rows.decode((Int64?, Int64, Int64?, Int64?, String).self) { found = row }
            guard let found, let position = found.position else { return nil }
            // A missing horizon is the settle mark, a missing settle mark the live cursor, as the marks read them.
            let horizon = found.horizon ?? found.settled ?? found.live
            guard position >= horizon, position <= found.live else { return nil }
            try await connection.query(
                """
                INSERT INTO \(unescaped: schema).join_tail (subscription, event_id)
                SELECT \(subscription), event_id FROM \(unescaped: schema).seen WHERE source = \(found.source) AND event_time >= \(position)
                ON CONFLICT DO NOTHING
                """, logger: logger)
            var newest: Int64?
            for try await value in try await connection.query(
                "SELECT max(event_time) FROM \(unescaped: schema).seen WHERE source = \(found.source) AND event_time >= \(position)",
                logger: logger
            ).decode(Int64?.self) { newest = value }
            let tailUntil = max(found.live, (newest ?? found.live) + 1)
            try await connection.query(
                "UPDATE \(unescaped: schema).subscription_cursor SET state = 'joining', tail_until = \(tailUntil) WHERE subscription = \(subscription)",
                logger: logger)
            return try await cursors(
                "SELECT \(unescaped: Self.columns) FROM \(unescaped: schema).subscription_cursor WHERE subscription = \(subscription)", on: connection
            ).first
        }
    }

    /// Queues, for a joining subscription, the events of its tail read that the shared poll saw before it joined.
    public func queueTail(subscription: String, source: String, events: [Event], now: Timestamp, by lease: Lease) async throws -> EnqueueResult {
        try await leases.fenced(by: lease) { connection in
            var result = EnqueueResult()
            let deliveries = PostgresDeliveries(database)
            for event in events {
                let taken = try await connection.query(
                    "DELETE FROM \(unescaped: schema).join_tail WHERE subscription = \(subscription) AND event_id = \(event.id) RETURNING event_id",
                    logger: logger)
                guard try await count(taken) == 1 else { continue }
                if try await deliveries.requeue(.init(event), source: source, for: subscription, now: now, on: connection) { result.queued += 1 }
                result.newEvents += 1
            }
            return result
        }
    }

    /// Ends a join: the subscription is current. Returns the listed events the tail read did not find.
    public func finishJoin(_ subscription: String, by lease: Lease) async throws -> Int {
        try await leases.fenced(by: lease) { connection in
            let missed = try await count(
                try await connection.query(
                    "DELETE FROM \(unescaped: schema).join_tail WHERE subscription = \(subscription) RETURNING event_id", logger: logger))
            try await connection.query(
                """
                UPDATE \(unescaped: schema).subscription_cursor SET state = 'current', position = NULL, tail_until = NULL, reason = NULL
                WHERE subscription = \(subscription) AND state = 'joining'
                """, logger: logger)
            return missed
        }
    }

    private static let columns = "subscription, source, state, position, tail_until, reason, since"

    private func cursors(_ query: PostgresQuery, on connection: PostgresConnection? = nil) async throws -> [SubscriptionCursor] {
        let rows: PostgresRowSequence
        if let connection {
            rows = try await connection.query(query, logger: logger)
        } else {
            rows = try await client.query(query, logger: logger)
        }
        var found: [SubscriptionCursor] = []
        for try await (subscription, source, state, position, tailUntil, reason, since)
            in rows.decode((String, String, String, Int64?, Int64?, String?, Int64?).self)
        {
            found.append(
                SubscriptionCursor(
                    subscription: subscription, source: source, state: SubscriptionCursor.State(rawValue: state) ?? .current,
                    position: position.map { Timestamp(millisecondsSinceEpoch: $0) }, tailUntil: tailUntil.map { Timestamp(millisecondsSinceEpoch: $0) },
                    reason: reason.flatMap(SubscriptionCursor.Reason.init(rawValue:)), since: since.map { Timestamp(millisecondsSinceEpoch: $0) }))
        }
        return found
    }
}
