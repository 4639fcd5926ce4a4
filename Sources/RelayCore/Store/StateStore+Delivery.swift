import Foundation
import GRDB

/// Which dead letters a command means: every condition given must hold. Empty matches them all.
public struct DeadLetterFilter: Sendable, Equatable {
    public var subscription: String?
    /// Any of these subscriptions (with ``subscription``, both must hold).
    public var subscriptions: [String]?
    /// The reason starts with this (`http_4`, `max_age`).
    public var reasonPrefix: String?
    /// The last HTTP status.
    public var status: Int?
    /// Dead-lettered at or after this time.
    public var since: Timestamp?
    /// Dead-lettered before this time.
    public var until: Timestamp?
    /// At most this many, oldest first.
    public var limit: Int?

    public init(
        subscription: String? = nil, subscriptions: [String]? = nil, reasonPrefix: String? = nil, status: Int? = nil,
        since: Timestamp? = nil, until: Timestamp? = nil, limit: Int? = nil
    ) {
        self.subscription = subscription
        self.subscriptions = subscriptions
        self.reasonPrefix = reasonPrefix
        self.status = status
        self.since = since
        self.until = until
        self.limit = limit
    }

    /// Whether any condition narrows it (`purge` without one must be asked for with `--all`).
    public var narrows: Bool { self != DeadLetterFilter() }

    /// This filter for one transaction of at most `chunk` (none: no bound beyond its own limit).
    public func chunked(_ chunk: Int?) -> DeadLetterFilter {
        var limited = self
        if let chunk { limited.limit = Swift.min(limit ?? chunk, chunk) }
        return limited
    }

    /// `WHERE ...` (with `prefix` before each column) and its arguments, for the dead-letter table.
    func whereClause(columnPrefix prefix: String = "") -> (sql: String, arguments: StatementArguments) {
        var conditions: [String] = []
        var arguments: StatementArguments = []
        if let subscription {
            conditions.append("\(prefix)subscription = ?")
            arguments += [subscription]
        }
        if let subscriptions {
            conditions.append("\(prefix)subscription IN (\(subscriptions.isEmpty ? "NULL" : subscriptions.map { _ in "?" }.joined(separator: ",")))")
            for name in subscriptions { arguments += [name] }
        }
        if let reasonPrefix {
            // substr, not LIKE: a reason may hold % or _. substr counts characters, as unicodeScalars does.
            conditions.append("substr(\(prefix)reason, 1, ?) = ?")
            arguments += [reasonPrefix.unicodeScalars.count, reasonPrefix]
        }
        if let status {
            conditions.append("\(prefix)last_status = ?")
            arguments += [status]
        }
        if let since {
            conditions.append("\(prefix)dead_at >= ?")
            arguments += [since.millisecondsSinceEpoch]
        }
        if let until {
            conditions.append("\(prefix)dead_at < ?")
            arguments += [until.millisecondsSinceEpoch]
        }
        return (conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND "), arguments)
    }

    /// ` LIMIT n`, or nothing.
    var limitClause: String { limit.map { " LIMIT \($0)" } ?? "" }
}

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
    /// The event as received (filled by ``StateStore/deadLetter(id:)`` only).
    public var payload: [UInt8] = []

    public init(
        id: Int64, subscription: String, eventID: String, eventTime: Timestamp, reason: String, status: Int?, attempts: Int,
        firstAttemptAt: Timestamp?, lastAttemptAt: Timestamp?, deadAt: Timestamp, responseSnippet: [UInt8], payload: [UInt8] = []
    ) {
        self.id = id
        self.subscription = subscription
        self.eventID = eventID
        self.eventTime = eventTime
        self.reason = reason
        self.status = status
        self.attempts = attempts
        self.firstAttemptAt = firstAttemptAt
        self.lastAttemptAt = lastAttemptAt
        self.deadAt = deadAt
        self.responseSnippet = responseSnippet
        self.payload = payload
    }
}

extension StateStore {
    /// A delivery's columns, joined with its event: `d` is `delivery` (never attempted: no schedule of its own, due
    /// since it was queued) or `delivery_attempt`.
    private static func deliveryColumns(attempted: Bool) -> String {
        let schedule = attempted
            ? "d.attempts, d.first_attempt_at, d.batch_id, d.next_attempt_at, d.batch_seq"
            : "0, NULL, NULL, e.queued_at, NULL"
        return "d.event, e.event_id, d.event_time, e.action, e.time_value, e.payload, \(schedule), e.queued_at"
    }

    /// ``deliveryColumns(attempted:)`` of a delivery in a log, from its event row alone.
    private static let logColumns = "e.id, e.event_id, e.event_time, e.action, e.time_value, e.payload, 0, NULL, NULL, e.queued_at, NULL, e.queued_at"

    private static func select(attempted: Bool, _ rest: String) -> String {
        "SELECT \(deliveryColumns(attempted: attempted)) FROM \(attempted ? "delivery_attempt" : "delivery") d JOIN event e ON e.id = d.event \(rest)"
    }

    /// A delivery's key, `(event_time, event)`, without its event.
    private static func selectKeys(attempted: Bool, _ rest: String) -> String {
        "SELECT d.event_time, d.event FROM \(attempted ? "delivery_attempt" : "delivery") d \(rest)"
    }

    /// The reads on the delivery path, by name, with `?` for their arguments: one place for the code and for the
    /// test that checks each one uses an index at a million queued rows.
    public static let deliveryQueries: [String: String] = [
        "queued": selectKeys(attempted: false, "WHERE d.subscription = ? ORDER BY d.event_time, d.event LIMIT ?"),
        "queued keys from": selectKeys(
            attempted: false, "WHERE d.subscription = ? AND (d.event_time, d.event) >= (?, ?) ORDER BY d.event_time, d.event LIMIT ?"),
        "due retries": selectKeys(attempted: true, "WHERE d.subscription = ? AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at LIMIT ?"),
        "attempted in time order": selectKeys(attempted: true, "WHERE d.subscription = ? ORDER BY d.event_time, d.event LIMIT ?"),
        "queued by key": select(attempted: false, "WHERE d.subscription = ? AND d.event_time = ? AND d.event = ?"),
        "queued from key": select(
            attempted: false, "WHERE d.subscription = ? AND (d.event_time, d.event) >= (?, ?) ORDER BY d.event_time, d.event LIMIT ?"),
        "log span": """
            SELECT \(logColumns) FROM event e
            WHERE e.source = ? AND e.event_time BETWEEN ? AND ? AND (e.event_time, e.id) >= (?, ?) AND (e.event_time, e.id) <= (?, ?)
            ORDER BY e.event_time, e.id
            """,
        "log row": "SELECT \(logColumns) FROM event e WHERE e.id = ?",
        "log from": SubscriptionLogs.from,
        "attempted by key": select(attempted: true, "WHERE d.subscription = ? AND d.event_time = ? AND d.event = ?"),
        "batch": select(attempted: true, "WHERE d.subscription = ? AND d.batch_id = ? ORDER BY d.batch_seq"),
        "first stored from": "SELECT stored_at FROM event WHERE id >= ? ORDER BY id LIMIT 1",
        "expired": """
            SELECT e.id, e.event_time FROM event e WHERE e.id < ? AND e.queued_at < ?
                AND (EXISTS (SELECT 1 FROM delivery d WHERE d.subscription = ? AND d.event_time = e.event_time AND d.event = e.id)
                     OR EXISTS (SELECT 1 FROM delivery_attempt d WHERE d.subscription = ? AND d.event_time = e.event_time AND d.event = e.id))
            ORDER BY e.id LIMIT ?
            """,
        "composed batches": "SELECT batch_id, members FROM composed_batch WHERE subscription = ?",
        "composed batch": "SELECT members FROM composed_batch WHERE subscription = ? AND batch_id = ?",
    ]

    /// Up to `limit` deliveries of a subscription that are due: retries that are due first, oldest due first,
    /// then queued ones in event-time order; with `strict`, the first ones in event-time order whether due or not
    /// (a strict subscription waits for its head). Rows of a batch come whole.
    ///
    /// While a strict subscription joins its source's shared poll, rows at or after the join's position are left
    /// out: the poll queues new events at once and the tail read queues older ones a moment later.
    /// With `retriesOnly`, only rows attempted before (and due) are read.
    public func deliveries(
        subscription: String, due now: Timestamp, limit: Int, strict: Bool, excluding: Set<Int64>, retriesOnly: Bool = false
    ) async throws(StoreError) -> [Delivery] {
        try await readQueue(
            subscription: subscription, due: now, limit: limit, strict: strict, excluding: excluding, retriesOnly: retriesOnly
        ).rows
    }

    /// A never-attempted delivery's place in its subscription's queue: event time, then event row.
    public struct QueuedKey: Sendable, Comparable {
        public var eventTime: Int64
        public var event: Int64

        public init(eventTime: Int64, event: Int64) {
            self.eventTime = eventTime
            self.event = event
        }

        /// The key of a delivery read from the queue.
        public init(_ delivery: Delivery) {
            self.init(eventTime: delivery.eventTime.millisecondsSinceEpoch, event: delivery.id)
        }

        /// The first key after this one.
        var next: QueuedKey { QueuedKey(eventTime: eventTime, event: event + 1) }

        public static func < (lhs: QueuedKey, rhs: QueuedKey) -> Bool { (lhs.eventTime, lhs.event) < (rhs.eventTime, rhs.event) }
    }

    /// What one read of a subscription's queue found.
    public struct QueueRead: Sendable {
        public var rows: [Delivery]
        /// The newest event row the read could see: a row handed over in memory with a higher id cannot have been
        /// read by it.
        public var newestEvent: Int64
        /// Where the next read of never-attempted rows may start (`queuedFrom`), if the caller keeps every row this
        /// read returned until its outcome is recorded: each such row before it was returned or excluded. Nil for a
        /// read of retries only.
        public var queuedFrom: QueuedKey?
        /// The read stopped at its bound on how far it scans the log, short of its limit: fewer rows than the limit do
        /// not mean the queue holds no more.
        public var cutShort = false
    }

    /// ``deliveries(subscription:due:limit:strict:excluding:retriesOnly:)``, with what the caller needs to read
    /// on from here. With `queuedFrom` (not strict), never-attempted rows are read from that key on, passing over the
    /// rows before it without a look: a subscription's oldest rows are the ones it has in flight, hundreds, and
    /// stepping over them was half of every read. Rows queued before the key since the read that gave it (an event
    /// visible late, a replay) are not seen: the caller lowers the key for the rows it is told were queued, and
    /// reads from the head now and then for any others.
    public func readQueue(
        subscription: String, due now: Timestamp, limit: Int, strict: Bool, excluding: Set<Int64>, retriesOnly: Bool = false,
        queuedFrom: QueuedKey? = nil
    ) async throws(StoreError) -> QueueRead {
        try await read("reading the queue of \(subscription)") { db in
            let newest = try Int64.fetchOne(db.cachedStatement(sql: "SELECT max(id) FROM event")) ?? 0
            let (rows, from, cutShort) = try Self.deliveries(
                subscription: subscription, due: now, limit: limit, strict: strict, excluding: excluding, retriesOnly: retriesOnly,
                queuedFrom: strict ? nil : queuedFrom, db)
            return QueueRead(rows: rows, newestEvent: newest, queuedFrom: retriesOnly || strict ? nil : from, cutShort: cutShort)
        }
    }

    private static func deliveries(
        subscription: String, due now: Timestamp, limit: Int, strict: Bool, excluding: Set<Int64>, retriesOnly: Bool,
        queuedFrom: QueuedKey? = nil, _ db: Database
    ) throws -> (rows: [Delivery], queuedFrom: QueuedKey?, cutShort: Bool) {
        guard let key = try DeliveryRows.existingKey(of: subscription, db) else { return ([], nil, false) }
        let wanted = Int64(limit + excluding.count)
        var composed = try ComposedBatches(subscription: key, db, indexingMembers: false)
        let read = { (row: FastRow) -> Delivery in
            var delivery = Self.delivery(row, subscription: subscription)
            if delivery.batchID == nil, let place = composed.placeOfMember(delivery.id) {
                (delivery.batchID, delivery.batchPosition) = (place.batch, place.position)
            }
            return delivery
        }
        // The rows in flight are a draining subscription's oldest: most rows read lie above them all, and need no
        // look-up in the set (two or three a row read, a third of a read's instructions).
        let excludedRows = excluding.min().flatMap { low in excluding.max().map { low...$0 } }
        func excluded(_ event: Int64) -> Bool { excludedRows?.contains(event) == true && excluding.contains(event) }
        // Keys first, then the rows the keys left after the ones in flight: a draining subscription has hundreds of
        // rows in flight at the head of its queue, and reading each with its payload only to drop it was the largest
        // cost of a read.
        func readAttempted(_ query: String, _ arguments: [FastValue]) throws -> [Delivery] {
            // Keys up to the limit's worth not in flight: those after are not read.
            var keys: [(time: Int64, event: Int64)] = []
            var picked = 0
            try FastStatement(db, sql: Self.deliveryQueries[query]!).step(arguments + [.integer(wanted)]) { row in
                keys.append((time: row.integer(0), event: row.integer(1)))
                if !excluded(keys[keys.count - 1].event) { picked += 1 }
                return picked < limit
            }
            return try readEach(keys, "attempted by key")
        }
        /// The rows at `keys` not in flight, a statement each, up to the limit.
        func readEach(_ keys: [(time: Int64, event: Int64)], _ query: String) throws -> [Delivery] {
            let byKey = try FastStatement(db, sql: Self.deliveryQueries[query]!)
            var found: [Delivery] = []
            for row in keys where !excluded(row.event) {
                found += try byKey.query([.integer(key), .integer(row.time), .integer(row.event)], read)
                if found.count == limit { break }
            }
            return found
        }
        // The queued rows the keys pick, read in one pass from the first: those not in flight are usually one run
        // after the ones in flight, where a query a row cost a statement and two seeks each. Nil when the run picks
        // fewer than 8 rows, or holds more rows in flight than not (read a row each, those are not read at all).
        func readQueuedSpan(_ keys: [(time: Int64, event: Int64)]) throws -> [Delivery]? {
            guard let first = keys.firstIndex(where: { !excluded($0.event) }) else { return [] }
            var last = first
            var picked = 0
            for index in keys.indices[first...] where !excluded(keys[index].event) {
                last = index
                picked += 1
                if picked == limit { break }
            }
            let span = last - first + 1
            guard picked >= 8, span <= 2 * picked else { return nil }
            // The keys are the subscription's first ones in this read's snapshot, so the span's rows are exactly these.
            let rows = try FastStatement(db, sql: Self.deliveryQueries["queued from key"]!).query(
                [.integer(key), .integer(keys[first].time), .integer(keys[first].event), .integer(Int64(span))], read)
            return rows.filter { !excluded($0.id) }
        }
        // Never-attempted deliveries: rows of `delivery` and the subscription's log, merged in queue order as far as
        // both were read.
        let logs = SubscriptionLogs(db)
        var queuedSeen: QueuedKey?
        var queuedCutShort = false
        func readQueued(from: QueuedKey?) throws -> [Delivery] {
            var rowKeys: [QueuedKey] = []
            var picked = 0
            let (query, arguments): (String, [FastValue]) = from.map {
                ("queued keys from", [.integer(key), .integer($0.eventTime), .integer($0.event), .integer(wanted)])
            } ?? ("queued", [.integer(key), .integer(wanted)])
            var rowsEnded = true
            try FastStatement(db, sql: Self.deliveryQueries[query]!).step(arguments) { row in
                rowKeys.append(QueuedKey(eventTime: row.integer(0), event: row.integer(1)))
                if !excluded(row.integer(1)) { picked += 1 }
                rowsEnded = picked < limit
                return rowsEnded
            }
            if rowKeys.count == Int(wanted) { rowsEnded = false }
            // A read from the head looks as far as it takes; one that goes on from where the last stopped, as far
            // as a bound, from which the next goes on.
            let owed = try logs.owed(
                key: key, from: from, limit: limit, scanning: from == nil ? .max : 65_536, counted: { !excluded($0) })
            // Both lists hold every delivery up to here; past it, one of them was not read.
            let bound = [rowsEnded ? nil : rowKeys.last, owed.complete].compactMap { $0 }.min()
            var merged: [(key: QueuedKey, inLog: Bool)] = []
            merged.reserveCapacity(rowKeys.count + owed.keys.count)
            var (r, l) = (0, 0)
            while r < rowKeys.count || l < owed.keys.count {
                let fromLog = r == rowKeys.count || (l < owed.keys.count && owed.keys[l] < rowKeys[r])
                let next = fromLog ? owed.keys[l] : rowKeys[r]
                if let bound, bound < next { break }
                merged.append((next, fromLog))
                if fromLog { l += 1 } else { r += 1 }
            }
            var looked: [(key: QueuedKey, inLog: Bool)] = []
            picked = 0
            for entry in merged {
                looked.append(entry)
                if !excluded(entry.key.event) { picked += 1 }
                if picked == limit { break }
            }
            queuedSeen = picked == limit ? looked.last?.key
                : bound ?? [rowKeys.last, owed.lastScanned, looked.last?.key].compactMap { $0 }.max()
            queuedCutShort = picked < limit && bound != nil
            let inRows = looked.filter { !$0.inLog }.map { (time: $0.key.eventTime, event: $0.key.event) }
            let inLog = looked.filter { $0.inLog && !excluded($0.key.event) }.map(\.key)
            var found = try readQueuedSpan(inRows) ?? readEach(inRows, "queued by key")
            let fromLog = try logRows(inLog)
            if !fromLog.isEmpty {
                found = found.isEmpty ? fromLog : (found + fromLog).sorted { ($0.eventTime, $0.id) < ($1.eventTime, $1.id) }
            }
            return found
        }
        // The log's rows at `keys` (in order): in one pass over their span when it holds few others, else a row each.
        func logRows(_ keys: [QueuedKey]) throws -> [Delivery] {
            guard let first = keys.first, let last = keys.last, let source = try logs.log(of: key)?.source else { return [] }
            if keys.count >= 8 {
                let wantedRows = Set(keys.map(\.event))
                var rows: [Delivery] = []
                var scanned = 0
                try FastStatement(db, sql: Self.deliveryQueries["log span"]!).step(
                    [.text(source), .integer(first.eventTime), .integer(last.eventTime), .integer(first.eventTime), .integer(first.event),
                     .integer(last.eventTime), .integer(last.event)]
                ) { row in
                    scanned += 1
                    if wantedRows.contains(row.integer(0)) {
                        rows.append(read(row))
                        rows[rows.count - 1].queuedInLog = true
                    }
                    return scanned <= 2 * keys.count
                }
                if rows.count == keys.count { return rows }
            }
            let byRow = try FastStatement(db, sql: Self.deliveryQueries["log row"]!)
            return try keys.flatMap { try byRow.query([.integer($0.event)], read) }.map {
                var delivery = $0
                delivery.queuedInLog = true
                return delivery
            }
        }
        var queued: [Delivery] = []
        if !retriesOnly {
            queued = try readQueued(from: queuedFrom)
        }
        var rows: [Delivery]
        if strict {
            let attempted = try readAttempted("attempted in time order", [.integer(key)])
            rows = attempted.isEmpty ? queued : (attempted + queued).sorted { ($0.eventTime, $0.id) < ($1.eventTime, $1.id) }
        } else {
            rows = try readAttempted("due retries", [.integer(key), .integer(now.millisecondsSinceEpoch)]) + queued
        }
        // Every queued row up to the last key looked at was returned or is excluded, unless the limit cuts some
        // off: the next read starts at the first of those.
        let queuedKept = max(0, limit - (rows.count - queued.count))
        let nextFrom = queuedKept < queued.count
            ? QueuedKey(queued[queuedKept])
            : queuedSeen?.next ?? queuedFrom
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
            let queuedByKey = try FastStatement(db, sql: Self.deliveryQueries["queued by key"]!)
            let logRow = try FastStatement(db, sql: Self.deliveryQueries["log row"]!)
            func queuedMember(_ member: ComposedBatches.Member) throws -> [Delivery] {
                let row = try queuedByKey.query([.integer(key), .integer(member.eventTime), .integer(member.event)], read)
                guard row.isEmpty, try logs.owes(key: key, eventTime: member.eventTime, event: member.event) else { return row }
                return try logRow.query([.integer(member.event)], read).map {
                    var delivery = $0
                    delivery.queuedInLog = true
                    return delivery
                }
            }
            for batch in batches {
                var whole = try composed.members[batch].map { fresh in try fresh.flatMap(queuedMember) }
                    ?? members.query([.integer(key), .text(batch)], read)
                whole.removeAll { excluding.contains($0.id) }
                // In place of its first member, so that the order of the read (due time, or event time) holds.
                guard let at = rows.firstIndex(where: { $0.batchID == batch }) else { continue }
                rows.removeAll { $0.batchID == batch }
                rows.insert(contentsOf: whole, at: min(at, rows.count))
            }
        }
        return (rows, nextFrom, queuedCutShort)
    }

    /// When the subscription's earliest queued delivery is due; nil when nothing is queued.
    public func nextDueTime(subscription: String) async throws(StoreError) -> Timestamp? {
        try await deliveries(subscription: subscription, due: Timestamp(millisecondsSinceEpoch: .max), limit: 1, strict: false, excluding: [])
            .first?.nextAttemptAt
    }

    /// Fixes the members and their order of each batch a dispatcher composed, before its first attempt, so that
    /// retries and restarts send the same body under the same id. A batch of never-attempted rows is one row of
    /// ``ComposedBatches``; one with a row attempted before moves its rows to `delivery_attempt`, due as they were.
    /// One transaction for them all: a draining subscription composes one per free place, and a commit each would
    /// queue them all behind the writer.
    ///
    /// The dispatchers a commit's hand-off wakes compose at once, one commit each behind the poller's; so a
    /// transaction takes every composition waiting when it begins (``CompositionCommits``), and each caller
    /// returns once the transaction with its batches has committed.
    public func assignBatches(_ batches: [(id: String, deliveries: [Delivery])]) async throws(StoreError) {
        guard !batches.isEmpty else { return }
        let result: Result<Void, StoreError> = await withCheckedContinuation { done in
            let lead = compositions.state.withLock { state in
                state.waiting.append(CompositionCommits.Waiting(batches: batches, done: done))
                defer { state.committing = true }
                return !state.committing
            }
            if lead { Task { await self.commitCompositions() } }
        }
        try result.get()
    }

    /// Commits the compositions waiting, a transaction at a time, until none is left.
    private func commitCompositions() async {
        while true {
            let outcome: Result<Void, StoreError>
            do {
                try await write("composing batches") { db in
                    let taken = self.compositions.state.withLock { state in
                        state.inTransaction = state.waiting
                        state.waiting = []
                        return state.inTransaction
                    }
                    for composition in taken { try Self.assign(composition.batches, db) }
                }
                outcome = .success(())
            } catch {
                outcome = .failure(error)
            }
            let (done, more) = compositions.state.withLock { state in
                var done = state.inTransaction
                state.inTransaction = []
                // A failed write fails those still waiting too: it may have failed before its transaction took them,
                // and trying again at once would fail the same way, with no caller told.
                if case .failure = outcome {
                    done += state.waiting
                    state.waiting = []
                }
                state.committing = !state.waiting.isEmpty
                return (done.map(\.done), state.committing)
            }
            for caller in done { caller.resume(returning: outcome) }
            guard more else { return }
        }
    }

    private static func assign(_ batches: [(id: String, deliveries: [Delivery])], _ db: Database) throws {
        let assign = try FastStatement(
            db,
            sql: """
                UPDATE delivery_attempt SET batch_id = ?, batch_seq = ?
                WHERE subscription = ? AND event_time = ? AND event = ? AND batch_id IS NULL
                """)
        let logs = SubscriptionLogs(db)
        let move = try QueuedToBatch(db, logs: logs)
        for (batchID, deliveries) in batches {
            guard let key = try DeliveryRows.existingKey(of: deliveries.first?.subscription ?? "", db) else { continue }
            // A row never attempted is in `delivery`; one attempted before, in `delivery_attempt`.
            if deliveries.allSatisfy({ $0.attempts == 0 }) {
                let members = deliveries.map { ComposedBatches.Member(eventTime: $0.eventTime.millisecondsSinceEpoch, event: $0.id) }
                try ComposedBatches.store(batchID, subscription: key, members: members, db)
                continue
            }
            for (position, delivery) in deliveries.enumerated() {
                let time = delivery.eventTime.millisecondsSinceEpoch
                if try !move(
                    subscription: key, eventTime: time, event: delivery.id, batch: batchID, position: position,
                    due: delivery.nextAttemptAt.millisecondsSinceEpoch)
                {
                    try assign.run(.text(batchID), .integer(Int64(position)), .integer(key), .integer(time), .integer(delivery.id))
                }
            }
        }
        try logs.finish()
    }

    /// Copies a delivery into the dead letters with its event's bytes, keeping its attempt history.
    private static func bury(_ db: Database) throws -> FastStatement {
        try FastStatement(
            db,
            sql: """
                INSERT OR REPLACE INTO dead_letter
                    (subscription, event_id, event_time, action, time_value, payload, reason, last_status,
                     response_snippet, attempts, first_attempt_at, last_attempt_at, dead_at)
                SELECT ?1, e.event_id, e.event_time, e.action, e.time_value, e.payload,
                    CASE WHEN ?3 IS NULL THEN (CASE WHEN coalesce(a.last_error, '') = '' THEN 'max_age (never attempted)'
                        ELSE 'max_age (last: ' || a.last_error || ')' END) ELSE ?3 END,
                    coalesce(?4, a.last_status), ?5, coalesce(a.attempts, 0) + ?6,
                    coalesce(a.first_attempt_at, ?7), coalesce(?7, a.last_attempt_at), ?8
                FROM event e LEFT JOIN delivery_attempt a ON a.subscription = ?2 AND a.event_time = e.event_time AND a.event = e.id
                WHERE e.id = ?9
                """)
    }

    /// Applies many outcomes in one transaction (the group commit): delivered rows leave the queue, retried
    /// ones are rescheduled, given-up ones move to the dead letters (invariant 2).
    public func record(_ outcomes: [DeliveryOutcome]) async throws(StoreError) {
        let outcomes = outcomes.filter { !$0.deliveries.isEmpty }
        guard !outcomes.isEmpty else { return }
        try await write("recording \(outcomes.count) delivery outcomes") { db in
            var rows = try DeliveryRows(db)
            let reschedule = try FastStatement(
                db,
                sql: """
                    UPDATE delivery_attempt SET attempts = attempts + 1, first_attempt_at = coalesce(first_attempt_at, ?1),
                        last_attempt_at = ?1, last_status = ?2, last_error = ?3, next_attempt_at = ?4
                    WHERE subscription = ?5 AND event_time = ?6 AND event = ?7
                    """)
            let firstAttempt = try FastStatement(
                db,
                sql: """
                    INSERT INTO delivery_attempt (subscription, event_time, event, next_attempt_at, attempts, first_attempt_at,
                        last_attempt_at, last_status, last_error)
                    VALUES (?5, ?6, ?7, ?4, 1, ?1, ?1, ?2, ?3)
                    """)
            let bury = try Self.bury(db)
            var stats = DeliveryStatsChanges()
            // Per subscription, the batches its outcomes name, of which only the stored ones are read. A delivery that
            // names none (composed by a caller that kept no ids) has them all read, to find its batch by its row.
            var named: [String: Set<String>] = [:]
            var unnamed: Set<String> = []
            for outcome in outcomes {
                let subscription = outcome.deliveries[0].subscription
                var last: String?
                for delivery in outcome.deliveries where delivery.batchID == nil || delivery.batchID != last {
                    last = delivery.batchID
                    if let batch = last { named[subscription, default: []].insert(batch) } else { unnamed.insert(subscription) }
                }
            }
            var composed: [Int64: ComposedBatches] = [:]
            for outcome in outcomes {
                let subscription = outcome.deliveries[0].subscription
                let key = try rows.key(of: subscription)
                let at = outcome.attemptedAt.millisecondsSinceEpoch
                let status: FastValue = outcome.status.map { .integer(Int64($0)) } ?? .integer(0)
                // A composed batch answered: retried, its members become attempted rows under its id first; delivered
                // or dead, its row goes with them.
                if composed[key] == nil {
                    composed[key] = unnamed.contains(subscription)
                        ? try ComposedBatches(subscription: key, db, indexingMembers: false)
                        : try ComposedBatches(subscription: key, batches: named[subscription] ?? [], db)
                }
                let answered = composed[key]!.batches(of: outcome.deliveries)
                let retried = if case .retry = outcome.decision { true } else { false }
                if retried {
                    for batch in answered { try composed[key]!.spill(batch, subscription: key, logs: rows.logs, db) }
                }
                switch outcome.decision {
                case .delivered:
                    try rows.remove(subscription: subscription, deliveries: outcome.deliveries)
                    stats.delivered(outcome.deliveries.count, subscription, at: at)
                case .retry(let next):
                    for delivery in outcome.deliveries {
                        let values: [FastValue] = [
                            .integer(at), status, .text(outcome.error ?? ""), .integer(next.millisecondsSinceEpoch), .integer(key),
                            .integer(delivery.eventTime.millisecondsSinceEpoch), .integer(delivery.id),
                        ]
                        if try reschedule.run(values) == 0,
                            try rows.logs.takeQueued(key: key, eventTime: delivery.eventTime.millisecondsSinceEpoch, event: delivery.id)
                        {
                            try firstAttempt.run(values)
                        }
                    }
                    stats.failed(subscription, at: at, failure: outcome.error)
                case .deadLetter(let reason):
                    for delivery in outcome.deliveries {
                        try bury.run(
                            .text(subscription), .integer(key), .text(reason), status, .blob(Array(outcome.responseSnippet.prefix(1024))),
                            .integer(1), .integer(at), .integer(outcome.decidedAt.millisecondsSinceEpoch), .integer(delivery.id))
                        try rows.remove(subscription: subscription, eventTime: delivery.eventTime.millisecondsSinceEpoch, event: delivery.id)
                    }
                    stats.failed(subscription, at: at, failure: reason)
                }
                if !retried {
                    for batch in answered { try composed[key]!.settle(
                        batch, answered: outcome.deliveries, subscription: key, logs: rows.logs, db) }
                }
            }
            try rows.finish()
            for (subscription, change) in stats.changes {
                if let failure = change.failure {
                    try Self.updateStats(db, subscription, delivered: 0, at: failure.at, failure: failure.reason)
                }
                if change.delivered > 0 {
                    try Self.updateStats(db, subscription, delivered: change.delivered, at: change.lastSuccess, failure: nil)
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
            guard let key = try DeliveryRows.existingKey(of: subscription, db) else { return 0 }
            var rows = try DeliveryRows(db)
            let cutoff = queuedBefore.millisecondsSinceEpoch
            let select = try FastStatement(db, sql: Self.deliveryQueries["expired"]!)
            let storedBefore = try Self.firstEventStored(since: cutoff, db)
            let wanted = limit + excluding.count
            var candidates = try select.query(
                [.integer(storedBefore), .integer(cutoff), .integer(key), .integer(key), .integer(Int64(wanted))]
            ) { ($0.integer(0), $0.integer(1)) }
            // In the log, a row's queue time is its store time: those stored before the cutoff, from the mark on.
            var from: QueuedKey?
            var inLog = 0
            while inLog < wanted {
                let owed = try rows.logs.owed(key: key, from: from, limit: wanted)
                let old = owed.keys.filter { $0.event < storedBefore }
                candidates += old.map { ($0.event, $0.eventTime) }
                inLog += old.count
                guard let complete = owed.complete else { break }
                from = complete.next
            }
            let expired = candidates.sorted { $0.0 < $1.0 }.filter { !excluding.contains($0.0) }.prefix(limit)
            // A composed batch losing members to the sweep goes on without them, under its id, as an attempted one would.
            var composed = try ComposedBatches(subscription: key, db)
            for batch in Set(expired.compactMap { composed.place[$0.0]?.batch }) {
                try composed.spill(batch, subscription: key, logs: rows.logs, db)
            }
            let bury = try Self.bury(db)
            let nowMS = now.millisecondsSinceEpoch
            for (event, time) in expired {
                // No reason given, no attempt added: the reason names the last failure, the status stays the last one.
                try bury.run(
                    .text(subscription), .integer(key), .null, .null, .blob([]), .integer(0), .null, .integer(nowMS), .integer(event))
                try rows.remove(subscription: subscription, eventTime: time, event: event)
            }
            try rows.finish()
            if !expired.isEmpty {
                try Self.updateStats(db, subscription, delivered: 0, at: nowMS, failure: "max_age")
            }
            return expired.count
        }
    }

    /// A row id below which the event rows are those stored before `time`, found by bisecting the row ids (store
    /// times never go back as ids grow: DeliveryRows stamps them so). What the sweep reads below it is every row that
    /// can have been queued before `time`, since a row's queue time is never before its store time, without an index
    /// of queue times that every ingest and removal would write.
    static func firstEventStored(since time: Int64, _ db: Database) throws -> Int64 {
        let first = try FastStatement(db, sql: Self.deliveryQueries["first stored from"]!)
        var low: Int64 = 0
        var high = (try Int64.fetchOne(db.cachedStatement(sql: "SELECT max(id) FROM event")) ?? 0) + 1
        while low < high {
            let middle = low + (high - low) / 2
            let storedAt = try first.query([.integer(middle)]) { $0.integer(0) }.first ?? .max
            if storedAt >= time { high = middle } else { low = middle + 1 }
        }
        return low
    }

    /// A group commit's changes to `delivery_stats`, written once per subscription rather than once per outcome.
    private struct DeliveryStatsChanges {
        struct Change {
            var delivered = 0
            var lastSuccess: Int64 = 0
            var failure: (at: Int64, reason: String?)?
        }
        var changes: [String: Change] = [:]

        mutating func delivered(_ count: Int, _ subscription: String, at: Int64) {
            changes[subscription, default: Change()].delivered += count
            changes[subscription]!.lastSuccess = max(changes[subscription]!.lastSuccess, at)
        }

        mutating func failed(_ subscription: String, at: Int64, failure: String?) {
            changes[subscription, default: Change()].failure = (at, failure)
        }
    }

    private static func updateStats(_ db: Database, _ subscription: String, delivered: Int, at: Int64, failure: String?) throws {
        if let failure {
            try db.cachedStatement(
                sql: """
                    INSERT INTO delivery_stats (subscription, last_failure_at, last_failure) VALUES (?, ?, ?)
                    ON CONFLICT (subscription) DO UPDATE SET last_failure_at = excluded.last_failure_at,
                        last_failure = excluded.last_failure
                    """
            ).execute(arguments: [subscription, at, failure])
        } else {
            try db.cachedStatement(
                sql: """
                    INSERT INTO delivery_stats (subscription, delivered, last_success_at) VALUES (?, ?, ?)
                    ON CONFLICT (subscription) DO UPDATE SET delivered = delivered + excluded.delivered,
                        last_success_at = excluded.last_success_at
                    """
            ).execute(arguments: [subscription, delivered, at])
        }
    }

    // MARK: - Dead letters

    /// Dead letters, oldest first.
    public func deadLetters(subscription: String? = nil) async throws(StoreError) -> [DeadLetter] {
        try await deadLetters(DeadLetterFilter(subscription: subscription))
    }

    /// The dead letters `filter` selects, oldest first.
    public func deadLetters(_ filter: DeadLetterFilter) async throws(StoreError) -> [DeadLetter] {
        try await read("reading dead letters") { db in
            let (clause, arguments) = filter.whereClause()
            return try Row.fetchAll(
                db,
                sql: """
                    SELECT id, subscription, event_id, event_time, reason, last_status, attempts, first_attempt_at,
                        last_attempt_at, dead_at, response_snippet
                    FROM dead_letter \(clause) ORDER BY dead_at, id\(filter.limitClause)
                    """, arguments: arguments
            ).map(Self.deadLetter)
        }
    }

    /// One dead letter with its event's payload, or nil when there is none with that id.
    public func deadLetter(id: Int64) async throws(StoreError) -> DeadLetter? {
        try await read("reading a dead letter") { db in
            guard let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT id, subscription, event_id, event_time, reason, last_status, attempts, first_attempt_at,
                        last_attempt_at, dead_at, response_snippet, payload
                    FROM dead_letter WHERE id = ?
                    """, arguments: [id])
            else { return nil }
            var letter = Self.deadLetter(row)
            let payload: Data = row["payload"]
            letter.payload = Array(payload)
            return letter
        }
    }

    private static func deadLetter(_ row: Row) -> DeadLetter {
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

    /// How many dead letters `filter` selects (what `replay --dry-run` and a purge's progress report).
    public func countDeadLetters(_ filter: DeadLetterFilter) async throws(StoreError) -> Int {
        try await read("counting dead letters") { db in
            let (clause, arguments) = filter.whereClause()
            let count = try Int.fetchOne(db, sql: "SELECT count(*) FROM (SELECT 1 FROM dead_letter \(clause)\(filter.limitClause))", arguments: arguments)
            return count ?? 0
        }
    }

    /// Puts dead letters back in the queue with fresh attempts, due now; returns how many.
    @discardableResult
    public func replayDeadLetters(subscription: String? = nil, now: Timestamp) async throws(StoreError) -> Int {
        try await replayDeadLetters(DeadLetterFilter(subscription: subscription), now: now).queued
    }

    /// Puts the dead letters `filter` selects back in the queue with fresh attempts, due now, at most `chunk` of
    /// them (oldest first) in one transaction. Returns how many dead letters it took (call again until 0 for the
    /// rest: a large replay then never holds the writer for long) and how many deliveries it queued (fewer when an
    /// event was queued for the subscription already).
    @discardableResult
    public func replayDeadLetters(_ filter: DeadLetterFilter, now: Timestamp, chunk: Int? = nil) async throws(StoreError)
        -> (taken: Int, queued: Int)
    {
        try await write("replaying dead letters") { db in
            let limited = filter.chunked(chunk)
            let (clause, arguments) = limited.whereClause(columnPrefix: "d.")
            var rows = try DeliveryRows(db)
            var replayed = 0
            let letters = try Row.fetchAll(
                db,
                sql: """
                    SELECT d.id, d.subscription, coalesce(c.source, '') AS source, d.event_id, d.event_time, d.action, d.time_value, d.payload
                    FROM dead_letter d LEFT JOIN subscription_cursor c ON c.subscription = d.subscription \(clause)
                    ORDER BY d.dead_at, d.id\(limited.limitClause)
                    """, arguments: arguments)
            let delete = try db.cachedStatement(sql: "DELETE FROM dead_letter WHERE id = ?")
            for letter in letters {
                let payload: Data = letter["payload"]
                let event = StoredEvent(
                    id: letter["event_id"], time: letter["event_time"], action: letter["action"], timeValue: letter["time_value"],
                    payload: Array(payload))
                replayed += try rows.queue(event, source: letter["source"], for: letter["subscription"], now: now.millisecondsSinceEpoch)
                let id: Int64 = letter["id"]
                try delete.execute(arguments: [id])
            }
            try rows.finish()
            return (letters.count, replayed)
        }
    }

    /// Deletes dead letters; returns how many.
    @discardableResult
    public func purgeDeadLetters(subscription: String? = nil) async throws(StoreError) -> Int {
        try await purgeDeadLetters(DeadLetterFilter(subscription: subscription))
    }

    /// Deletes the dead letters `filter` selects, at most `chunk` of them (oldest first) in one transaction;
    /// returns how many. As with a replay, call again until 0 for the rest.
    @discardableResult
    public func purgeDeadLetters(_ filter: DeadLetterFilter, chunk: Int? = nil) async throws(StoreError) -> Int {
        try await write("purging dead letters") { db in
            let limited = filter.chunked(chunk)
            let (clause, arguments) = limited.whereClause()
            try db.execute(
                sql: "DELETE FROM dead_letter WHERE id IN (SELECT id FROM dead_letter \(clause) ORDER BY dead_at, id\(limited.limitClause))",
                arguments: arguments)
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

    /// A delivery from a row of ``deliveryColumns(attempted:)``.
    static func delivery(_ row: FastRow, subscription: String) -> Delivery {
        Delivery(
            id: row.integer(0), subscription: subscription, eventID: row.text(1),
            eventTime: Timestamp(millisecondsSinceEpoch: row.integer(2)), action: row.text(3), timeValue: row.text(4),
            payload: row.blob(5), attempts: Int(row.integer(6)), firstAttemptAt: row.optionalInteger(7).map(Timestamp.fromMilliseconds),
            batchID: row.optionalText(8), batchPosition: row.optionalInteger(10).map(Int.init),
            nextAttemptAt: Timestamp(millisecondsSinceEpoch: row.integer(9)), queuedAt: Timestamp(millisecondsSinceEpoch: row.integer(11)))
    }
}
