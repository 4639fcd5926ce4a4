import Logging
import PostgresNIO
import RelayCore

/// A source's pages into PostgreSQL, by the instance that holds its lease: each page's events deduplicated by
/// id, queued for the subscriptions they match, and the source's marks moved, in one transaction fenced by the
/// lease. A former holder (paused, partitioned) commits nothing: it can neither queue a page twice nor move a
/// mark, which only ever moves forward.
public struct PostgresIngest: Sendable, PostgresPart {
    private let leases: PostgresLeases
    private let deliveries: PostgresDeliveries
    let database: RelayDatabase

    public init(_ database: RelayDatabase) {
        self.database = database
        leases = PostgresLeases(database)
        deliveries = PostgresDeliveries(database)
    }

    /// Commits one page of `source` under `lease`: events not seen before are queued for their subscriptions (an
    /// event no subscription wants is only remembered as seen), and the marks advance as `advance` says. Throws
    /// ``LeaseLost``, having committed nothing, when `lease` is no longer held.
    ///
    /// As in SQLite, a subscription that is behind gets only the late events before its own position, and one
    /// whose queue holds `queueLimits[name]` events falls behind at this event.
    public func enqueue(
        source: String, events: [RoutedEvent], advance: MarkAdvance, queueLimits: [String: Int] = [:], by lease: Lease, now: Timestamp
    ) async throws -> EnqueueResult {
        try await leases.fenced(by: lease) { connection in
            var result = EnqueueResult()
            if !events.isEmpty {
                var lanes = try await PostgresLanes(
                    connection, schema: schema, logger: logger, source: source, limits: queueLimits, liveAfter: advance.live)
                let unseen = try await connection.query(
                    """
                    INSERT INTO \(unescaped: schema).seen (source, event_time, event_id)
                    SELECT \(source), t, id FROM unnest(\(events.map(\.event.time.millisecondsSinceEpoch)), \(events.map(\.event.id))) AS e(t, id)
                    ON CONFLICT DO NOTHING
                    RETURNING event_id, event_time
                    """, logger: logger)
                var new: Set<SeenKey> = []
                for try await (id, time) in unseen.decode((String, Int64).self) { new.insert(SeenKey(id: id, time: time)) }
                result.newEvents = new.count
                result.duplicates = events.count - new.count
                // Each new event once, in the page's order (a page may hold one id twice), for the subscriptions
                // whose lane admits it.
                var fresh: [RoutedEvent] = []
                for routed in events where new.remove(SeenKey(id: routed.event.id, time: routed.event.time.millisecondsSinceEpoch)) != nil {
                    var admitted: [String] = []
                    for subscription in routed.subscriptions where try await lanes.admits(subscription, at: routed.event.time, now: now) {
                        admitted.append(subscription)
                        lanes.count(subscription, 1)
                    }
                    fresh.append(RoutedEvent(event: routed.event, subscriptions: admitted))
                }
                result.queued = try await deliveries.queue(fresh, source: source, now: now, on: connection).queued
                result.filled = lanes.filled
            }
            try await connection.query(
                """
                INSERT INTO \(unescaped: schema).cursor AS c (source, position, settled, epoch, updated_at)
                VALUES (\(source), \(advance.live?.millisecondsSinceEpoch ?? 0), \(advance.settled?.millisecondsSinceEpoch), \(lease.epoch), now())
                ON CONFLICT (source) DO UPDATE SET
                    position = greatest(c.position, excluded.position),
                    settled = CASE WHEN excluded.settled IS NOT NULL
                            AND (\(advance.settledOnlyFrom?.millisecondsSinceEpoch)::bigint IS NULL OR c.settled >= \(advance.settledOnlyFrom?.millisecondsSinceEpoch))
                        THEN greatest(c.settled, excluded.settled) ELSE c.settled END,
                    epoch = excluded.epoch, updated_at = now()
                """, logger: logger)
            return result
        }
    }

    /// A source's marks, or nil before its first start. As in SQLite, a missing settle mark is the live cursor and a
    /// missing seen-id horizon the settle mark.
    public func marks(of source: String) async throws -> SourceMarks? {
        try await Self.marks(of: source, schema: schema, logger: logger) { try await client.query($0, logger: $1) }
    }

    private static func marks(
        of source: String, schema: String, logger: Logger, _ query: (PostgresQuery, Logger) async throws -> PostgresRowSequence
    ) async throws -> SourceMarks? {
        let rows = try await query("SELECT position, settled, seen_horizon FROM \(unescaped: schema).cursor WHERE source = \(source)", logger)
        for try await (live, settled, horizon) in rows.decode((Int64, Int64?, Int64?).self) {
            let settledMark = settled ?? live
            return SourceMarks(
                live: Timestamp(millisecondsSinceEpoch: live), settled: Timestamp(millisecondsSinceEpoch: settledMark),
                seenHorizon: Timestamp(millisecondsSinceEpoch: horizon ?? settledMark))
        }
        return nil
    }

    /// Sets a source's first marks at `position` under `lease`, unless it has some; returns the marks in force. A
    /// cursor stored without a settle mark gets one `lookback` behind it, as SQLite's does.
    public func initializeMarks(of source: String, at position: Timestamp, lookback: Duration, by lease: Lease) async throws -> SourceMarks {
        try await leases.fenced(by: lease) { connection in
            let first = position.millisecondsSinceEpoch
            try await connection.query(
                """
                INSERT INTO \(unescaped: schema).cursor (source, position, settled, seen_horizon, epoch, updated_at)
                VALUES (\(source), \(first), \(first), \(first - 1), \(lease.epoch), now())
                ON CONFLICT (source) DO NOTHING
                """, logger: logger)
            try await connection.query(
                """
                UPDATE \(unescaped: schema).cursor SET settled = position - \(milliseconds(lookback))
                WHERE source = \(source) AND settled IS NULL
                """, logger: logger)
            try await connection.query(
                "UPDATE \(unescaped: schema).cursor SET seen_horizon = settled - 1 WHERE source = \(source) AND seen_horizon IS NULL",
                logger: logger)
            return try await Self.marks(of: source, schema: schema, logger: logger) { try await connection.query($0, logger: $1) }!
        }
    }

    /// Moves the settle mark of `source` up to `position` under `lease`: never past the live cursor, never back.
    public func advanceSettled(source: String, to position: Timestamp, by lease: Lease) async throws {
        _ = try await leases.fenced(by: lease) { connection in
            try await connection.query(
                """
                UPDATE \(unescaped: schema).cursor SET settled = greatest(settled, least(position, \(position.millisecondsSinceEpoch)))
                WHERE source = \(source)
                """, logger: logger)
        }
    }

    /// Forgets the seen ids of `source` no read can return again, a second before its lower mark, and moves the
    /// seen-id horizon there (never back); how many.
    @discardableResult
    public func pruneSeen(source: String, by lease: Lease) async throws -> Int {
        try await leases.fenced(by: lease) { connection in
            try await connection.query(
                """
                UPDATE \(unescaped: schema).cursor
                SET seen_horizon = greatest(coalesce(seen_horizon, least(position, coalesce(settled, position)) - 1000),
                    least(position, coalesce(settled, position)) - 1000)
                WHERE source = \(source)
                """, logger: logger)
            let rows = try await connection.query(
                """
                DELETE FROM \(unescaped: schema).seen
                WHERE source = \(source) AND event_time < (SELECT seen_horizon FROM \(unescaped: schema).cursor WHERE source = \(source))
                RETURNING event_time
                """, logger: logger)
            return try await count(rows)
        }
    }

    /// Forgets the seen ids of `source` older than `before`, which no read can return again; how many.
    @discardableResult
    public func pruneSeen(source: String, before: Timestamp) async throws -> Int {
        let rows = try await client.query(
            """
            DELETE FROM \(unescaped: schema).seen WHERE source = \(source) AND event_time < \(before.millisecondsSinceEpoch)
            RETURNING event_time
            """, logger: logger)
        return try await count(rows)
    }

    /// How many deliveries are queued for `subscription`, claimed or not.
    public func queueDepth(_ subscription: String) async throws -> Int {
        let rows = try await client.query(
            "SELECT count(*)::int8 FROM \(unescaped: schema).delivery WHERE subscription = \(subscription)", logger: logger)
        for try await depth in rows.decode(Int64.self) { return Int(depth) }
        return 0
    }

    private struct SeenKey: Hashable {
        let id: String
        let time: Int64
    }
}
