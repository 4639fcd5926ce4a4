import Foundation
import GRDB

/// A request to deliver a subscription's events of a time range again, read anew from the API.
public struct ReplayRequest: Sendable, Equatable {
    public var id: Int64
    public var subscription: String
    public var since: Timestamp
    /// The end of the range: `--until`, or when it was requested.
    public var until: Timestamp
    /// Read up to here so far.
    public var position: Timestamp
    /// Events queued so far.
    public var queued: Int
    public var requestedAt: Timestamp
    /// Set when the whole range has been read.
    public var finishedAt: Timestamp?

    /// A request as stored.
    public init(
        id: Int64, subscription: String, since: Timestamp, until: Timestamp, position: Timestamp, queued: Int, requestedAt: Timestamp,
        finishedAt: Timestamp?
    ) {
        (self.id, self.subscription, self.since, self.until, self.position) = (id, subscription, since, until, position)
        (self.queued, self.requestedAt, self.finishedAt) = (queued, requestedAt, finishedAt)
    }
}

extension StateStore {
    /// Records a replay request for the daemon; returns its id.
    public func requestReplay(subscription: String, since: Timestamp, until: Timestamp, now: Timestamp) async throws(StoreError) -> Int64 {
        try await write("recording a replay of \(subscription)") { db in
            try db.execute(
                sql: "INSERT INTO replay_request (subscription, since, until, position, requested_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [
                    subscription, since.millisecondsSinceEpoch, until.millisecondsSinceEpoch, since.millisecondsSinceEpoch,
                    now.millisecondsSinceEpoch,
                ])
            return db.lastInsertedRowID
        }
    }

    /// A replay request by id.
    public func replayRequest(_ id: Int64) async throws(StoreError) -> ReplayRequest? {
        try await read("reading replay request \(id)") { db in
            try Row.fetchOne(db, sql: "SELECT * FROM replay_request WHERE id = ?", arguments: [id]).map(Self.replayRequest)
        }
    }

    /// The unfinished replay requests of these subscriptions, oldest first.
    public func pendingReplays(of subscriptions: [String]) async throws(StoreError) -> [ReplayRequest] {
        guard !subscriptions.isEmpty else { return [] }
        return try await read("reading replay requests") { db in
            let marks = Array(repeating: "?", count: subscriptions.count).joined(separator: ", ")
            return try Row.fetchAll(
                db, sql: "SELECT * FROM replay_request WHERE finished_at IS NULL AND subscription IN (\(marks)) ORDER BY id",
                arguments: StatementArguments(subscriptions)
            ).map(Self.replayRequest)
        }
    }

    /// Queues a page of a replay of `source` and moves its position to `through`, in one transaction; stops at the first event
    /// that finds the subscription's queue full (`limit`), keeping its place there. Events still queued are not
    /// queued twice; delivered ones are queued again, under their original `webhook-id`, but never twice by one
    /// replay (``ReadBoundary``).
    public func queueReplay(
        _ id: Int64, source: String, events: [Event], through: Timestamp, limit: Int, now: Timestamp
    ) async throws(StoreError) -> EnqueueResult {
        try await write("queueing replayed events") { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT subscription, position, boundary_ids FROM replay_request WHERE id = ?", arguments: [id])
            else { return EnqueueResult() }
            let subscription: String = row["subscription"]
            let boundary = ReadBoundary(
                position: Timestamp(millisecondsSinceEpoch: row["position"]),
                ids: Self.decodeIDs(row["boundary_ids"]))
            let fresh = boundary.unqueued(events)
            let (result, position) = try Self.queue(fresh, of: source, for: subscription, through: through, upTo: limit, db, now: now)
            let next = boundary.after(queueing: fresh, result, movedTo: position)
            try db.execute(
                sql: "UPDATE replay_request SET position = ?, boundary_ids = ?, queued = queued + ? WHERE id = ?",
                arguments: [next.position.millisecondsSinceEpoch, Self.encodeIDs(next.ids), result.queued, id])
            return result
        }
    }

    /// A ``ReadBoundary``'s ids as stored: a JSON array.
    static func encodeIDs(_ ids: Set<String>) -> String {
        (try? JSONEncoder().encode(ids.sorted())).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
    }

    /// Ids stored by ``encodeIDs(_:)``; none when there are none, or they cannot be read.
    static func decodeIDs(_ text: String?) -> Set<String> {
        guard let text else { return [] }
        return Set((try? JSONDecoder().decode([String].self, from: Data(text.utf8))) ?? [])
    }

    /// Marks a replay done.
    public func finishReplay(_ id: Int64, now: Timestamp) async throws(StoreError) {
        try await write("finishing replay request \(id)") { db in
            try db.execute(sql: "UPDATE replay_request SET finished_at = ? WHERE id = ?", arguments: [now.millisecondsSinceEpoch, id])
        }
    }

    private static func replayRequest(_ row: Row) -> ReplayRequest {
        ReplayRequest(
            id: row["id"], subscription: row["subscription"], since: Timestamp(millisecondsSinceEpoch: row["since"]),
            until: Timestamp(millisecondsSinceEpoch: row["until"]), position: Timestamp(millisecondsSinceEpoch: row["position"]),
            queued: row["queued"], requestedAt: Timestamp(millisecondsSinceEpoch: row["requested_at"]),
            finishedAt: (row["finished_at"] as Int64?).map(Timestamp.fromMilliseconds))
    }
}
