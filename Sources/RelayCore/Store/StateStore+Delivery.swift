import Foundation
import GRDB

/// A delivery given up on, as `dead-letters list` shows it.
public struct DeadLetter: Sendable, Equatable {
    public var id: Int64
    public var subscription: String
    public var eventID: String
    public var eventTime: Timestamp
    public var reason: String
    /// The last HTTP status, when there was one.
    public var status: Int?
    public var attempts: Int
    public var firstAttemptAt: Timestamp?
    public var lastAttemptAt: Timestamp?
    public var deadAt: Timestamp
    /// Up to 1 KiB of the last response.
    public var responseSnippet: [UInt8]
}

extension StateStore {
    static let deliveryColumns =
        "id, subscription, event_id, event_time, action, time_value, payload, attempts, first_attempt_at, batch_id, next_attempt_at, batch_seq, enqueued_at"

    /// The reads on the delivery path, by name, with `?` for their arguments: one place for the code and for the
    /// test that checks each one uses an index at a million queued rows.
    public static let deliveryQueries: [String: String] = [
        "due": "SELECT \(deliveryColumns) FROM outbox WHERE subscription = ? AND next_attempt_at <= ? ORDER BY next_attempt_at, event_time, id LIMIT ?",
        "strict": "SELECT \(deliveryColumns) FROM outbox WHERE subscription = ? ORDER BY event_time, id LIMIT ?",
        "batch": "SELECT \(deliveryColumns) FROM outbox WHERE subscription = ? AND batch_id = ? ORDER BY batch_seq",
        "next due": "SELECT min(next_attempt_at) FROM outbox WHERE subscription = ?",
        "expired": "SELECT id FROM outbox WHERE subscription = ? AND enqueued_at < ? ORDER BY enqueued_at LIMIT ?",
    ]

    /// Up to `limit` deliveries of a subscription that are due, oldest due first; with `strict`, the first ones in
    /// event-time order whether due or not (a strict subscription waits for its head). Rows of a batch come whole.
    ///
    /// While a strict subscription joins its source's shared poll, rows at or after the join's position are left
    /// out: the poll queues new events at once and the tail read queues older ones a moment later.
    public func deliveries(subscription: String, due now: Timestamp, limit: Int, strict: Bool, excluding: Set<Int64>)
        async throws(StoreError) -> [Delivery]
    {
        try await read("reading the outbox of \(subscription)") { db in
            let select = try FastStatement(db, sql: Self.deliveryQueries[strict ? "strict" : "due"]!)
            let arguments: [FastValue] = strict
                ? [.text(subscription), .integer(Int64(limit + excluding.count))]
                : [.text(subscription), .integer(now.millisecondsSinceEpoch), .integer(Int64(limit + excluding.count))]
            var rows = try select.query(arguments, Self.delivery).filter { !excluding.contains($0.id) }
            rows = Array(rows.prefix(limit))
            if strict, let joinedAt = try FastStatement(
                db, sql: "SELECT position FROM subscription_cursor WHERE subscription = ? AND state = 'joining'"
            ).query([.text(subscription)], { $0.integer(0) }).first {
                rows = Array(rows.prefix { $0.eventTime.millisecondsSinceEpoch < joinedAt })
            }
            // Complete any batch cut by the limit, so that a batch is always sent as first composed, in its order.
            let batches = Set(rows.compactMap(\.batchID))
            if !batches.isEmpty {
                let members = try FastStatement(db, sql: Self.deliveryQueries["batch"]!)
                for batch in batches {
                    let whole = try members.query([.text(subscription), .text(batch)], Self.delivery).filter { !excluding.contains($0.id) }
                    // In place of its first member, so that the order of the read (due time, or event time) holds.
                    guard let at = rows.firstIndex(where: { $0.batchID == batch }) else { continue }
                    rows.removeAll { $0.batchID == batch }
                    rows.insert(contentsOf: whole, at: min(at, rows.count))
                }
            }
            return rows
        }
    }

    /// When the subscription's earliest queued delivery is due; nil when nothing is queued.
    public func nextDueTime(subscription: String) async throws(StoreError) -> Timestamp? {
        try await read("reading the outbox of \(subscription)") { db in
            try Int64.fetchOne(db, sql: Self.deliveryQueries["next due"]!, arguments: [subscription])
                .map(Timestamp.fromMilliseconds)
        }
    }

    /// Fixes a batch's members and their order before its first attempt, so that retries and restarts send the
    /// same body under the same id.
    public func assignBatch(_ batchID: String, to ids: [Int64]) async throws(StoreError) {
        try await write("composing a batch") { db in
            let statement = try FastStatement(
                db, sql: "UPDATE outbox SET batch_id = ?, batch_seq = ? WHERE id = ? AND batch_id IS NULL")
            for (position, id) in ids.enumerated() { try statement.run(.text(batchID), .integer(Int64(position)), .integer(id)) }
        }
    }

    /// Applies many outcomes in one transaction (the group commit): delivered rows leave the outbox, retried
    /// ones are rescheduled, given-up ones move to the dead letters (invariant 2).
    public func record(_ outcomes: [DeliveryOutcome]) async throws(StoreError) {
        guard !outcomes.isEmpty else { return }
        try await write("recording \(outcomes.count) delivery outcomes") { db in
            let delete = try FastStatement(db, sql: "DELETE FROM outbox WHERE id = ?")
            let reschedule = try FastStatement(
                db,
                sql: """
                    UPDATE outbox SET attempts = attempts + 1, first_attempt_at = coalesce(first_attempt_at, ?),
                        last_attempt_at = ?, last_status = ?, last_error = ?, next_attempt_at = ?
                    WHERE id = ?
                    """)
            let bury = try FastStatement(
                db,
                sql: """
                    INSERT OR REPLACE INTO dead_letter
                        (subscription, event_id, event_time, action, time_value, payload, reason, last_status,
                         response_snippet, attempts, first_attempt_at, last_attempt_at, dead_at)
                    SELECT subscription, event_id, event_time, action, time_value, payload, ?, ?, ?, attempts + 1,
                        coalesce(first_attempt_at, ?), ?, ?
                    FROM outbox WHERE id = ?
                    """)
            for outcome in outcomes {
                let at = outcome.attemptedAt.millisecondsSinceEpoch
                let status: FastValue = outcome.status.map { .integer(Int64($0)) } ?? .integer(0)
                switch outcome.decision {
                case .delivered:
                    for delivery in outcome.deliveries { try delete.run(.integer(delivery.id)) }
                    try Self.updateStats(db, outcome.deliveries[0].subscription, delivered: outcome.deliveries.count, at: at, failure: nil)
                case .retry(let next):
                    for delivery in outcome.deliveries {
                        try reschedule.run(
                            .integer(at), .integer(at), status, .text(outcome.error ?? ""), .integer(next.millisecondsSinceEpoch),
                            .integer(delivery.id))
                    }
                    try Self.updateStats(db, outcome.deliveries[0].subscription, delivered: 0, at: at, failure: outcome.error)
                case .deadLetter(let reason):
                    for delivery in outcome.deliveries {
                        try bury.run(
                            .text(reason), status, .blob(Array(outcome.responseSnippet.prefix(1024))), .integer(at), .integer(at),
                            .integer(at), .integer(delivery.id))
                        try delete.run(.integer(delivery.id))
                    }
                    try Self.updateStats(db, outcome.deliveries[0].subscription, delivered: 0, at: at, failure: reason)
                }
            }
        }
    }

    /// Moves up to `limit` rows queued before `queuedBefore` to the dead letters without an attempt, leaving out
    /// `excluding` (rows a request is carrying); returns how many. The reason names the last failure, if any.
    public func expire(
        subscription: String, queuedBefore: Timestamp, excluding: Set<Int64>, now: Timestamp, limit: Int = 10_000
    ) async throws(StoreError) -> Int {
        try await write("expiring old rows of \(subscription)") { db in
            let select = try FastStatement(db, sql: Self.deliveryQueries["expired"]!)
            let ids = try select.query(
                [.text(subscription), .integer(queuedBefore.millisecondsSinceEpoch), .integer(Int64(limit + excluding.count))]
            ) { $0.integer(0) }.filter { !excluding.contains($0) }.prefix(limit)
            let bury = try FastStatement(
                db,
                sql: """
                    INSERT OR REPLACE INTO dead_letter
                        (subscription, event_id, event_time, action, time_value, payload, reason, last_status,
                         response_snippet, attempts, first_attempt_at, last_attempt_at, dead_at)
                    SELECT subscription, event_id, event_time, action, time_value, payload,
                        CASE WHEN coalesce(last_error, '') = '' THEN 'max_age (never attempted)'
                             ELSE 'max_age (last: ' || last_error || ')' END,
                        last_status, x'', attempts, first_attempt_at, last_attempt_at, ?
                    FROM outbox WHERE id = ?
                    """)
            let delete = try FastStatement(db, sql: "DELETE FROM outbox WHERE id = ?")
            for id in ids {
                try bury.run(.integer(now.millisecondsSinceEpoch), .integer(id))
                try delete.run(.integer(id))
            }
            if !ids.isEmpty {
                try Self.updateStats(db, subscription, delivered: 0, at: now.millisecondsSinceEpoch, failure: "max_age")
            }
            return ids.count
        }
    }

    private static func updateStats(_ db: Database, _ subscription: String, delivered: Int, at: Int64, failure: String?) throws {
        if let failure {
            try db.execute(
                sql: """
                    INSERT INTO delivery_stats (subscription, last_failure_at, last_failure) VALUES (?, ?, ?)
                    ON CONFLICT (subscription) DO UPDATE SET last_failure_at = excluded.last_failure_at,
                        last_failure = excluded.last_failure
                    """, arguments: [subscription, at, failure])
        } else {
            try db.execute(
                sql: """
                    INSERT INTO delivery_stats (subscription, delivered, last_success_at) VALUES (?, ?, ?)
                    ON CONFLICT (subscription) DO UPDATE SET delivered = delivered + excluded.delivered,
                        last_success_at = excluded.last_success_at
                    """, arguments: [subscription, delivered, at])
        }
    }

    // MARK: - Dead letters

    /// Dead letters, oldest first, of one subscription or all.
    public func deadLetters(subscription: String? = nil) async throws(StoreError) -> [DeadLetter] {
        try await read("reading dead letters") { db in
            let filter = subscription == nil ? "" : "WHERE subscription = ?"
            let arguments: StatementArguments = subscription.map { [$0] } ?? []
            return try Row.fetchAll(
                db,
                sql: """
                    SELECT id, subscription, event_id, event_time, reason, last_status, attempts, first_attempt_at,
                        last_attempt_at, dead_at, response_snippet
                    FROM dead_letter \(filter) ORDER BY dead_at, id
                    """, arguments: arguments
            ).map { row in
                let status: Int? = row["last_status"]
                let first: Int64? = row["first_attempt_at"]
                let last: Int64? = row["last_attempt_at"]
                let snippet: Data? = row["response_snippet"]
                return DeadLetter(
                    id: row["id"], subscription: row["subscription"], eventID: row["event_id"],
                    eventTime: Timestamp(millisecondsSinceEpoch: row["event_time"]), reason: row["reason"],
                    status: status == 0 ? nil : status, attempts: row["attempts"],
                    firstAttemptAt: first.map(Timestamp.fromMilliseconds), lastAttemptAt: last.map(Timestamp.fromMilliseconds),
                    deadAt: Timestamp(millisecondsSinceEpoch: row["dead_at"]), responseSnippet: snippet.map(Array.init) ?? [])
            }
        }
    }

    /// Puts dead letters back in the outbox with fresh attempts, due now; returns how many.
    @discardableResult
    public func replayDeadLetters(subscription: String? = nil, now: Timestamp) async throws(StoreError) -> Int {
        try await write("replaying dead letters") { db in
            let filter = subscription == nil ? "" : "WHERE subscription = ?"
            var arguments: StatementArguments = [now.millisecondsSinceEpoch, now.millisecondsSinceEpoch]
            if let subscription { arguments += [subscription] }
            try db.execute(
                sql: """
                    INSERT OR IGNORE INTO outbox
                        (subscription, event_id, event_time, action, time_value, payload, enqueued_at, next_attempt_at)
                    SELECT subscription, event_id, event_time, action, time_value, payload, ?, ? FROM dead_letter \(filter)
                    """, arguments: arguments)
            let replayed = db.changesCount
            try db.execute(sql: "DELETE FROM dead_letter \(filter)", arguments: subscription.map { [$0] } ?? [])
            return replayed
        }
    }

    /// Deletes dead letters; returns how many.
    @discardableResult
    public func purgeDeadLetters(subscription: String? = nil) async throws(StoreError) -> Int {
        try await write("purging dead letters") { db in
            let filter = subscription == nil ? "" : "WHERE subscription = ?"
            try db.execute(sql: "DELETE FROM dead_letter \(filter)", arguments: subscription.map { [$0] } ?? [])
            return db.changesCount
        }
    }

    /// Deletes dead letters that died before `before` (the retention); returns how many.
    @discardableResult
    public func pruneDeadLetters(before: Timestamp) async throws(StoreError) -> Int {
        try await write("pruning old dead letters") { db in
            try db.execute(sql: "DELETE FROM dead_letter WHERE dead_at < ?", arguments: [before.millisecondsSinceEpoch])
            return db.changesCount
        }
    }

    /// A delivery from a row of ``deliveryColumns``.
    static func delivery(_ row: FastRow) -> Delivery {
        Delivery(
            id: row.integer(0), subscription: row.text(1), eventID: row.text(2),
            eventTime: Timestamp(millisecondsSinceEpoch: row.integer(3)), action: row.text(4), timeValue: row.text(5),
            payload: row.blob(6), attempts: Int(row.integer(7)), firstAttemptAt: row.optionalInteger(8).map(Timestamp.fromMilliseconds),
            batchID: row.optionalText(9), batchPosition: row.optionalInteger(11).map(Int.init),
            nextAttemptAt: Timestamp(millisecondsSinceEpoch: row.integer(10)), queuedAt: Timestamp(millisecondsSinceEpoch: row.integer(12)))
    }
}
