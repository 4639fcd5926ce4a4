import GRDB

/// An event's stored parts, as a queue path has them: from a page, or back from a dead letter.
struct StoredEvent {
    var id: String
    var time: Int64
    var action: String
    var timeValue: String
    var payload: [UInt8]
}

extension StoredEvent {
    /// An event from a page, as it is stored.
    init(_ event: Event) {
        self.init(
            id: event.id, time: event.time.millisecondsSinceEpoch, action: event.action,
            timeValue: event.timeValue.description, payload: event.raw)
    }
}

/// Writes and removes deliveries inside the caller's transaction, in the subscriptions' logs or as rows, keeping the
/// counts that go with them: an event's `pending` (the rows that need it: its row goes with the last of them once no
/// log holds it) and each subscription's `queue_depth`. Every path that queues or removes a delivery goes through
/// here, so the counts cannot drift.
struct DeliveryRows {
    private let db: Database
    /// The transaction's logs, which ``finish()`` finishes.
    let logs: SubscriptionLogs
    private let insertEvent: FastStatement
    private let findEvent: FastStatement
    private let insertDelivery: FastStatement
    private let attemptedExists: FastStatement
    private let holdEvent: FastStatement
    private let deleteFresh: FastStatement
    private let deleteAttempted: FastStatement
    private let queuedInSpan: FastStatement
    private let deleteSpan: FastStatement
    private let dropEvents: FastStatement
    private let releaseEvents: FastStatement
    private var keys: [String: Int64] = [:]
    private var depthChanges: [String: Int] = [:]
    /// The event row of each delivery removed, released in ``finish()``: an event delivered to five subscriptions in
    /// one group commit is then one delete, where releasing each delivery as it went was four updates of the row
    /// (with its payload) and a delete, and a failed delete before each update. A list, sorted once at the end, as
    /// a dictionary cost a one-subscription commit more than the statements it saved.
    private var releases: [Int64] = []
    /// The newest event row's store time, read once per transaction: see ``insert(_:source:now:pending:routing:)``.
    private var lastStored: Int64?
    /// Delivery rows of new events, not inserted yet: ``insertQueued()`` inserts them a subscription at a time, many
    /// rows to a statement. With five subscriptions, a statement a row was a third of the queueing commit; and each
    /// subscription's rows land together in its part of the key.
    private var queuedNew: [(key: Int64, time: Int64, event: Int64)] = []
    /// The subscriptions the last new events were queued for, their keys, and how many events: a page's events
    /// mostly go to the same ones, whose keys and depths are then looked up once for the run, not once a delivery.
    private var newRun: (names: [String], keys: [Int64], logs: [(bit: Int64, from: Int64)?], events: Int) = ([], [], [], 0)

    init(_ db: Database) throws {
        self.db = db
        logs = SubscriptionLogs(db)
        insertEvent = try FastStatement(
            db,
            sql: """
                INSERT INTO event (source, event_id, event_time, action, time_value, payload, queued_at, pending, stored_at, routing)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?7, ?9)
                """)
        findEvent = try FastStatement(db, sql: "SELECT id FROM event WHERE source = ? AND event_time = ? AND event_id = ?")
        insertDelivery = try FastStatement(db, sql: "INSERT OR IGNORE INTO delivery (subscription, event_time, event) VALUES (?, ?, ?)")
        attemptedExists = try FastStatement(
            db, sql: "SELECT 1 FROM delivery_attempt WHERE subscription = ? AND event_time = ? AND event = ?")
        holdEvent = try FastStatement(db, sql: "UPDATE event SET pending = pending + 1, queued_at = max(queued_at, ?) WHERE id = ?")
        deleteFresh = try FastStatement(db, sql: "DELETE FROM delivery WHERE subscription = ? AND event_time = ? AND event = ?")
        deleteAttempted = try FastStatement(
            db, sql: "DELETE FROM delivery_attempt WHERE subscription = ? AND event_time = ? AND event = ?")
        queuedInSpan = try FastStatement(
            db, sql: "SELECT event FROM delivery WHERE subscription = ? AND event_time BETWEEN ? AND ? LIMIT ?")
        deleteSpan = try FastStatement(db, sql: "DELETE FROM delivery WHERE subscription = ? AND event_time BETWEEN ? AND ?")
        dropEvents = try FastStatement(db, sql: "DELETE FROM event WHERE id BETWEEN ?1 AND ?2 AND pending <= ?3 AND routing = 0")
        releaseEvents = try FastStatement(db, sql: "UPDATE event SET pending = pending - ?3 WHERE id BETWEEN ?1 AND ?2")
    }

    /// The subscription's integer key, created on first use.
    mutating func key(of subscription: String) throws -> Int64 {
        if let key = keys[subscription] { return key }
        let key: Int64
        if let existing = try Self.existingKey(of: subscription, db) {
            key = existing
        } else {
            try db.execute(sql: "INSERT INTO subscription_key (name) VALUES (?)", arguments: [subscription])
            key = db.lastInsertedRowID
        }
        keys[subscription] = key
        return key
    }

    /// Queues an event the source had not given before for `subscriptions` (not empty): one event row, routed to
    /// the logs of those that have one, and one small row each for the others (those whose log's mark is past the
    /// event, or that have none). Falls back to ``queue(_:source:for:now:)`` when its row is still stored (its seen
    /// id was pruned while a subscription kept it queued, or a replay stored it). Returns the event's row when it is
    /// new, the deliveries queued per subscription (nil: one each), and whether all of them are in logs.
    mutating func queueNew(
        _ event: StoredEvent, source: String, for subscriptions: [String], now: Int64
    ) throws -> (row: Int64?, queued: [Int]?, inLogs: Bool) {
        // A row can be stored already only at or before the source's newest time: a live poll's new events seldom are.
        if let newest = try logs.newestTime(of: source), event.time <= newest,
            try !findEvent.query([.text(source), .integer(event.time), .text(event.id)], { _ in true }).isEmpty
        {
            return (nil, try subscriptions.map { try queue(event, source: source, for: $0, now: now) }, false)
        }
        if subscriptions != newRun.names {
            endNewRun()
            let keys = try subscriptions.map { try key(of: $0) }
            let logs = try keys.map { try self.logs.logForNew(key: $0, source: source).map { (bit: $0.bit, from: $0.mark.eventTime) } }
            newRun = (subscriptions, keys, logs, 0)
        }
        // A new row's id is above every mark, so its time alone says whether it is at or after a log's mark. An event
        // stamped well after now is a row: in a log, the mark would follow it once it was delivered, and every event
        // after it, stamped before it, would be a row until then.
        let inLog = { (log: (bit: Int64, from: Int64)?) -> Bool in
            guard let log else { return false }
            return event.time >= log.from && event.time <= now + Self.futureInLog
        }
        var routing: Int64 = 0
        var rows = 0
        for log in newRun.logs {
            if inLog(log) { routing |= log!.bit } else { rows += 1 }
        }
        try insert(event, source: source, now: now, pending: rows, routing: routing)
        let row = db.lastInsertedRowID
        try logs.stored(source: source, time: event.time)
        newRun.events += 1
        if rows > 0 {
            for (index, log) in newRun.logs.enumerated() where !inLog(log) {
                queuedNew.append((newRun.keys[index], event.time, row))
            }
        }
        return (row, nil, rows == 0)
    }

    /// How far after now (ms) an event may be stamped and still go in a log.
    static let futureInLog: Int64 = 10 * 60 * 1_000

    /// Adds the events queued for the last run's subscriptions to their depths.
    private mutating func endNewRun() {
        guard newRun.events > 0 else { return }
        for subscription in newRun.names { depthChanges[subscription, default: 0] += newRun.events }
        newRun.events = 0
    }

    /// Inserts the rows ``queueNew(_:source:for:now:)`` collected, before anything else reads or changes the queue:
    /// a subscription at a time, in event order.
    private mutating func insertQueued() throws {
        guard !queuedNew.isEmpty else { return }
        var keys: [Int64] = []
        for row in queuedNew where !keys.contains(row.key) { keys.append(row.key) }
        var values: [Int64] = []
        values.reserveCapacity(64 * 3)
        for key in keys {
            var remaining = queuedNew.lazy.filter { $0.key == key }.count
            var index = queuedNew.startIndex
            while remaining > 0 {
                // Statements of 64, 32, ... 1 rows: seven texts in the statement cache, whatever the page size.
                var size = 64
                while size > remaining { size /= 2 }
                values.removeAll(keepingCapacity: true)
                while values.count < size * 3 {
                    let row = queuedNew[index]
                    index += 1
                    guard row.key == key else { continue }
                    values.append(row.key)
                    values.append(row.time)
                    values.append(row.event)
                }
                try FastStatement(db, sql: Self.insertDeliveries[size.trailingZeroBitCount]).run(integerList: values)
                remaining -= size
            }
        }
        queuedNew.removeAll(keepingCapacity: true)
    }

    /// Inserts of 1, 2, 4 ... 64 rows.
    private static let insertDeliveries = (0...6).map { power in
        "INSERT OR IGNORE INTO delivery (subscription, event_time, event) VALUES "
            + repeatElement("(?, ?, ?)", count: 1 << power).joined(separator: ", ")
    }

    /// Queues an event for one subscription unless it is queued for it already; 1 if queued, else 0. An event
    /// row stored already is shared, and its queue time moves to now (`maxAge` counts from the latest queueing).
    mutating func queue(_ event: StoredEvent, source: String, for subscription: String, now: Int64) throws -> Int {
        try insertQueued()
        let key = try key(of: subscription)
        let row: Int64
        if let existing = try findEvent.query([.text(source), .integer(event.time), .text(event.id)], { $0.integer(0) }).first {
            row = existing
            guard try !logs.owes(key: key, eventTime: event.time, event: row),
                try attemptedExists.query([.integer(key), .integer(event.time), .integer(row)], { _ in true }).isEmpty,
                try insertDelivery.run(integers: key, event.time, row) == 1
            else { return 0 }
            try holdEvent.run(integers: now, row)
        } else {
            try insert(event, source: source, now: now, pending: 1, routing: 0)
            row = db.lastInsertedRowID
            try logs.stored(source: source, time: event.time)
            try insertDelivery.run(integers: key, event.time, row)
        }
        depthChanges[subscription, default: 0] += 1
        return 1
    }

    /// Inserts the event's row with `pending` delivery rows and the logs' `routing` bits (the caller knows its
    /// (source, time, id) is not stored).
    /// Its store and queue time is `now`, or the newest row's store time if that is later (a clock stepped back, a
    /// page stamped before it waited for the writer): store times never go back as row ids grow, which the maxAge
    /// sweep's bisection relies on (StateStore.firstEventStored).
    private mutating func insert(_ event: StoredEvent, source: String, now: Int64, pending: Int, routing: Int64) throws {
        if lastStored == nil {
            lastStored = try Int64.fetchOne(db.cachedStatement(sql: "SELECT stored_at FROM event ORDER BY id DESC LIMIT 1")) ?? 0
        }
        let at = max(now, lastStored!)
        lastStored = at
        try insertEvent.run(
            .text(source), .text(event.id), .integer(event.time), .text(event.action), .text(event.timeValue),
            .blob(event.payload), .integer(at), .integer(Int64(pending)), .integer(routing))
    }

    /// Removes a delivery, queued (as a row or in the log) or attempted, and releases its event; false if there was
    /// none.
    @discardableResult
    mutating func remove(subscription: String, eventTime: Int64, event: Int64) throws -> Bool {
        try insertQueued()
        let key = try key(of: subscription)
        if try deleteFresh.run(integers: key, eventTime, event) == 1 || deleteAttempted.run(integers: key, eventTime, event) == 1 {
            releases.append(event)
        } else if try logs.take(key: key, [(eventTime, event, false)]).isEmpty {
            return false
        }
        depthChanges[subscription, default: 0] -= 1
        return true
    }

    /// Removes delivered rows of one subscription, as ``remove(subscription:eventTime:event:)`` does each. A batch's
    /// never-attempted rows are usually all the subscription's queued rows in their span of event times: then they
    /// go with one range delete, where a delete each was a third of the recording commit with five subscriptions.
    /// Any other row in the span (an event that came late, a member of another batch) and it is a delete each.
    mutating func remove(subscription: String, deliveries all: [Delivery]) throws {
        try insertQueued()
        // Most are in the log: taken there with one look at the index, and the rest as rows.
        let inLog = try logs.take(
            key: try key(of: subscription), all.map { ($0.eventTime.millisecondsSinceEpoch, $0.id, $0.queuedInLog) })
        depthChanges[subscription, default: 0] -= inLog.count
        guard inLog.count < all.count else { return }
        let deliveries = inLog.isEmpty ? all : all.filter { [inLog = Set(inLog)] in !inLog.contains($0.id) }
        guard !deliveries.isEmpty else { return }
        guard deliveries.count >= 8 else {
            return try removeEach(deliveries, subscription: subscription)
        }
        let key = try key(of: subscription)
        var (earliest, latest) = (Int64.max, Int64.min)
        for delivery in deliveries {
            earliest = min(earliest, delivery.eventTime.millisecondsSinceEpoch)
            latest = max(latest, delivery.eventTime.millisecondsSinceEpoch)
        }
        let inSpan = try queuedInSpan.query(
            [.integer(key), .integer(earliest), .integer(latest), .integer(Int64(deliveries.count + 1))]) { $0.integer(0) }
        guard inSpan.count <= deliveries.count, Self.contains(deliveries.map(\.id).sorted(), all: inSpan.sorted()) else {
            return try removeEach(deliveries, subscription: subscription)
        }
        let removed = try deleteSpan.run(integers: key, earliest, latest)
        guard removed == inSpan.count else {
            throw StoreError.io("removing delivered rows: \(removed) rows in their span, \(inSpan.count) read just before")
        }
        releases += inSpan
        depthChanges[subscription, default: 0] -= removed
        // Members not queued there were attempted before, or are gone already.
        guard removed < deliveries.count else { return }
        let queued = Set(inSpan)
        try removeEach(deliveries.lazy.filter { !queued.contains($0.id) }, subscription: subscription)
    }

    /// Removes each of `deliveries` with ``remove(subscription:eventTime:event:)``.
    private mutating func removeEach(_ deliveries: some Sequence<Delivery>, subscription: String) throws {
        for delivery in deliveries {
            try remove(subscription: subscription, eventTime: delivery.eventTime.millisecondsSinceEpoch, event: delivery.id)
        }
    }

    /// Whether every element of `subset` is in `set`, both sorted.
    private static func contains(_ set: [Int64], all subset: [Int64]) -> Bool {
        var index = set.startIndex
        for element in subset {
            while index < set.endIndex, set[index] < element { index += 1 }
            guard index < set.endIndex, set[index] == element else { return false }
        }
        return true
    }

    /// Releases the event rows of the removed deliveries (a row goes with the last delivery that needs it) and
    /// applies the queue-depth changes; called once, before the transaction commits.
    mutating func finish() throws {
        try insertQueued()
        endNewRun()
        try logs.finish()
        releases.sort()
        // Runs of consecutive event rows that each lost as many deliveries, as a drain's commits have them, go with
        // a statement or two a run: those rows with no delivery left, then the rest's counts.
        var index = releases.startIndex
        var run: (first: Int64, last: Int64, released: Int64)?
        while index < releases.endIndex {
            let event = releases[index]
            let next = releases[index...].firstIndex { $0 != event } ?? releases.endIndex
            let released = Int64(next - index)
            if let current = run, current.last + 1 == event, current.released == released {
                run!.last = event
            } else {
                if let run { try release(run) }
                run = (event, event, released)
            }
            index = next
        }
        if let run { try release(run) }
        releases.removeAll()
        for (subscription, change) in depthChanges where change != 0 {
            try db.cachedStatement(
                sql: """
                    INSERT INTO queue_depth (subscription, n) VALUES (?, ?)
                    ON CONFLICT (subscription) DO UPDATE SET n = n + excluded.n
                    """
            ).execute(arguments: [subscription, change])
        }
    }

    /// Releases each of the event rows `first...last` (one, or a run) from `released` deliveries: a row with no more
    /// goes.
    private func release(_ run: (first: Int64, last: Int64, released: Int64)) throws {
        let dropped = try dropEvents.run(integers: run.first, run.last, run.released)
        // Every row of the run is stored (a queued delivery keeps its event's row): those left need their counts.
        if dropped < run.last - run.first + 1 { try releaseEvents.run(integers: run.first, run.last, run.released) }
    }

    /// A subscription's key, or nil if it never had a delivery. Read for each batch composed and each read of a
    /// queue: through GRDB's arguments and cursor it cost as much as encoding a batch's members.
    static func existingKey(of subscription: String, _ db: Database) throws -> Int64? {
        try FastStatement(db, sql: "SELECT id FROM subscription_key WHERE name = ?").query([.text(subscription)]) { $0.integer(0) }.first
    }
}

extension StateStore {
    /// What disagrees between the queue's rows and logs and the counts kept with them: each subscription's
    /// `queue_depth`, each event's `pending`, deliveries whose event row is missing, event rows kept for nothing.
    /// Empty when consistent. Reads every queued row: for tests and diagnosis, not for the daemon's loops.
    public func queueCountProblems() async throws(StoreError) -> [String] {
        try await read("checking the queue's counts") { db in
            var problems: [String] = []
            let logs = SubscriptionLogs(db)
            var inLogs: [String: Int] = [:]
            for (key, name) in try Row.fetchAll(db, sql: "SELECT id, name FROM subscription_key WHERE log_slot IS NOT NULL").map({
                ($0[0] as Int64, $0[1] as String)
            }) {
                inLogs[name] = try logs.count(key: key)
            }
            let depths = try Row.fetchAll(
                db,
                sql: """
                    SELECT coalesce(q.subscription, k.name) AS name, coalesce(q.n, 0) AS kept, coalesce(r.n, 0) AS counted
                    FROM (SELECT subscription, count(*) AS n FROM
                            (SELECT subscription FROM delivery UNION ALL SELECT subscription FROM delivery_attempt) GROUP BY subscription) r
                    JOIN subscription_key k ON k.id = r.subscription
                    LEFT JOIN queue_depth q ON q.subscription = k.name
                    UNION ALL
                    SELECT q.subscription, q.n, 0 FROM queue_depth q
                    WHERE q.n != 0 AND NOT EXISTS (
                        SELECT 1 FROM subscription_key k WHERE k.name = q.subscription
                        AND (EXISTS (SELECT 1 FROM delivery WHERE subscription = k.id)
                             OR EXISTS (SELECT 1 FROM delivery_attempt WHERE subscription = k.id)))
                    """)
            var depthsSeen: Set<String> = []
            for row in depths {
                let name: String = row["name"]
                depthsSeen.insert(name)
                let counted = (row["counted"] as Int) + (inLogs[name] ?? 0)
                if (row["kept"] as Int) != counted {
                    problems.append("queue_depth of \(name) is \(row["kept"] as Int), rows and log \(counted)")
                }
            }
            for (name, count) in inLogs where count > 0 && !depthsSeen.contains(name) {
                let kept = try Int.fetchOne(db, sql: "SELECT n FROM queue_depth WHERE subscription = ?", arguments: [name]) ?? 0
                if kept != count { problems.append("queue_depth of \(name) is \(kept), log \(count)") }
            }
            // An event row no delivery row needs is kept for a log that has not passed it, and only for that.
            for source in try String.fetchAll(db, sql: "SELECT DISTINCT source FROM event") {
                let marks = try logs.logs(of: source).map { (bit: $0.bit, mark: $0.mark) }
                let unneeded = try Row.fetchAll(
                    db, sql: "SELECT id, event_time, routing FROM event WHERE source = ? AND pending = 0", arguments: [source]
                ).filter { row in
                    let key = QueuedKey(eventTime: row["event_time"], event: row["id"])
                    let routing: Int64 = row["routing"]
                    return !marks.contains { routing & $0.bit != 0 && key >= $0.mark }
                }
                for row in unneeded.prefix(5) { problems.append("event row \(row["id"] as Int64) is kept for nothing") }
            }
            let pending = try Row.fetchAll(
                db,
                sql: """
                    SELECT e.id, e.pending, (SELECT count(*) FROM delivery d WHERE d.event = e.id)
                        + (SELECT count(*) FROM delivery_attempt a WHERE a.event = e.id) AS refs
                    FROM event e
                    """)
            for row in pending where (row["pending"] as Int) != (row["refs"] as Int) {
                problems.append("event row \(row["id"] as Int64) has pending \(row["pending"] as Int), rows \(row["refs"] as Int)")
            }
            let orphaned = try Int.fetchOne(
                db,
                sql: """
                    SELECT count(*) FROM (SELECT event FROM delivery UNION ALL SELECT event FROM delivery_attempt) r
                    WHERE NOT EXISTS (SELECT 1 FROM event e WHERE e.id = r.event)
                    """) ?? 0
            if orphaned > 0 { problems.append("\(orphaned) deliveries without their event row") }
            // A composed batch is answered or spilled as a whole: none is left without a queued member, or with one
            // that was attempted.
            let queued = try FastStatement(db, sql: "SELECT 1 FROM delivery WHERE subscription = ? AND event_time = ? AND event = ?")
            let attempted = try FastStatement(
                db, sql: "SELECT 1 FROM delivery_attempt WHERE subscription = ? AND event_time = ? AND event = ?")
            let batches = try FastStatement(db, sql: "SELECT subscription, batch_id, members FROM composed_batch")
                .query([]) { ($0.integer(0), $0.text(1), ComposedBatches.decode($0.blob(2))) }
            for (key, batch, members) in batches {
                var anyQueued = false
                for member in members {
                    let arguments: [FastValue] = [.integer(key), .integer(member.eventTime), .integer(member.event)]
                    if try !queued.query(arguments, { _ in true }).isEmpty { anyQueued = true }
                    if try logs.owes(key: key, eventTime: member.eventTime, event: member.event) { anyQueued = true }
                    if try !attempted.query(arguments, { _ in true }).isEmpty {
                        problems.append("composed batch \(batch) has event row \(member.event) in delivery_attempt")
                    }
                }
                if !anyQueued { problems.append("composed batch \(batch) has no queued member") }
            }
            return problems
        }
    }
}
