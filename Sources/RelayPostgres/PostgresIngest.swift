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
    public func enqueue(
        source: String, events: [RoutedEvent], advance: MarkAdvance, by lease: Lease, now: Timestamp
    ) async throws -> EnqueueResult {
        try await leases.fenced(by: lease) { connection in
            var result = EnqueueResult()
            if !events.isEmpty {
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
                // Each new event once, in the page's order (a page may hold one id twice).
                let fresh = events.filter { new.remove(SeenKey(id: $0.event.id, time: $0.event.time.millisecondsSinceEpoch)) != nil }
                result.queued = try await deliveries.queue(fresh, source: source, now: now, on: connection).queued
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

    /// A source's live cursor and settle mark, or nil before its first commit.
    public func marks(of source: String) async throws -> (live: Timestamp, settled: Timestamp?)? {
        let rows = try await client.query(
            "SELECT position, settled FROM \(unescaped: schema).cursor WHERE source = \(source)", logger: logger)
        for try await (live, settled) in rows.decode((Int64, Int64?).self) {
            return (Timestamp(millisecondsSinceEpoch: live), settled.map(Timestamp.init(millisecondsSinceEpoch:)))
        }
        return nil
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

    private struct SeenKey: Hashable {
        let id: String
        let time: Int64
    }
}
