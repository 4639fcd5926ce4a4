import Logging
import PostgresNIO
import RelayCore

/// `intilery-relay replay` requests in PostgreSQL: recorded from any machine, carried out by the instance that
/// polls the subscription's source, each page queued under that source's lease.
public struct PostgresReplays: Sendable, PostgresPart {
    let database: RelayDatabase
    private let leases: PostgresLeases

    public init(_ database: RelayDatabase) {
        self.database = database
        leases = PostgresLeases(database)
    }

    public func requestReplay(subscription: String, since: Timestamp, until: Timestamp, now: Timestamp) async throws -> Int64 {
        let rows = try await client.query(
            """
            INSERT INTO \(unescaped: schema).replay_request (subscription, since, until, position, requested_at)
            VALUES (\(subscription), \(since.millisecondsSinceEpoch), \(until.millisecondsSinceEpoch), \(since.millisecondsSinceEpoch),
                    \(now.millisecondsSinceEpoch))
            RETURNING id
            """, logger: logger)
        for try await id in rows.decode(Int64.self) { return id }
        throw NotRecorded()
    }

    /// An INSERT ... RETURNING that returned no row.
    struct NotRecorded: Error, CustomStringConvertible {
        var description: String { "the replay request was not recorded (no id returned)" }
    }

    public func replayRequest(_ id: Int64) async throws -> ReplayRequest? {
        try await requests("SELECT \(unescaped: Self.columns) FROM \(unescaped: schema).replay_request WHERE id = \(id)").first
    }

    public func pendingReplays(of subscriptions: [String]) async throws -> [ReplayRequest] {
        guard !subscriptions.isEmpty else { return [] }
        return try await requests(
            """
            SELECT \(unescaped: Self.columns) FROM \(unescaped: schema).replay_request
            WHERE finished_at IS NULL AND subscription = ANY(\(subscriptions)) ORDER BY id
            """)
    }

    /// Queues a page of replay `id` under `lease` (the lease of the source polled): stops at the first event that
    /// finds the subscription's queue at `limit`, keeping the request's place there. Throws ``LeaseLost``, having
    /// queued nothing, when the lease is no longer held.
    public func queueReplay(
        _ id: Int64, source: String, events: [Event], through: Timestamp, limit: Int, now: Timestamp, by lease: Lease
    ) async throws -> EnqueueResult {
        try await leases.fenced(by: lease) { connection in
            let found = try await connection.query(
                "SELECT subscription, position, boundary_ids FROM \(unescaped: schema).replay_request WHERE id = \(id) FOR UPDATE",
                logger: logger)
            var stored: (subscription: String, boundary: ReadBoundary)?
            for try await (name, position, ids) in found.decode((String, Int64, [String]).self) {
                stored = (name, ReadBoundary(position: Timestamp(millisecondsSinceEpoch: position), ids: Set(ids)))
            }
            guard let (subscription, boundary) = stored else { return EnqueueResult() }
            let fresh = boundary.unqueued(events)
            let (result, position) = try await PostgresDeliveries(database).queue(
                fresh, of: source, for: subscription, through: through, upTo: limit, now: now, on: connection)
            let next = boundary.after(queueing: fresh, result, movedTo: position)
            try await connection.query(
                """
                UPDATE \(unescaped: schema).replay_request SET position = \(next.position.millisecondsSinceEpoch),
                    boundary_ids = \(next.ids.sorted()), queued = queued + \(result.queued)
                WHERE id = \(id)
                """, logger: logger)
            return result
        }
    }

    public func finishReplay(_ id: Int64, now: Timestamp) async throws {
        try await client.query(
            "UPDATE \(unescaped: schema).replay_request SET finished_at = \(now.millisecondsSinceEpoch) WHERE id = \(id)", logger: logger)
    }

    private static let columns = "id, subscription, since, until, position, queued, requested_at, finished_at"

    private func requests(_ query: PostgresQuery) async throws -> [ReplayRequest] {
        var found: [ReplayRequest] = []
        for try await (id, subscription, since, until, position, queued, requestedAt, finishedAt)
            in try await client.query(query, logger: logger).decode((Int64, String, Int64, Int64, Int64, Int, Int64, Int64?).self)
        {
            found.append(
                ReplayRequest(
                    id: id, subscription: subscription, since: Timestamp(millisecondsSinceEpoch: since), until: Timestamp(millisecondsSinceEpoch: until),
                    position: Timestamp(millisecondsSinceEpoch: position), queued: queued, requestedAt: Timestamp(millisecondsSinceEpoch: requestedAt),
                    finishedAt: finishedAt.map { Timestamp(millisecondsSinceEpoch: $0) }))
        }
        return found
    }
}
