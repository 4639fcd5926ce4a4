import GRDB

/// Never-attempted deliveries kept as positions in the stored events rather than a row each. A subscription with a
/// log has a bit (its slot, one of 63 per source) in the `routing` of each event row ingest queued for it, and a
/// mark: every routed row before the mark is taken (delivered, dead, or moved to `delivery_attempt`), and so are the
/// rows after it listed in `log_done`. A row routed to it, at or after its mark and not done, is queued for it.
///
/// A row per (subscription, event) cost the writer an insert and a delete, about 6,000 instructions, for each
/// subscription beyond the first: with five, the writer did 1.87 times the work of one (1.29 times now). Here a
/// subscription costs a bit at ingest and an entry in its done list when taken, and the mark and the done list are
/// written once per commit. Rows queued any other way (an event older than a mark or stamped well after now, a
/// replay, a catch-up, a subscription beyond 63, or whose source changed) stay rows in `delivery`, and every path
/// reads both.
///
/// One per transaction: it reads each subscription's log when first asked and, from a writing transaction,
/// ``finish()`` moves the marks past what was taken, deletes the event rows nothing needs any more, and stores the
/// logs it changed.
final class SubscriptionLogs {
    typealias Key = StateStore.QueuedKey

    struct Log {
        var key: Int64
        var source: String
        var slot: Int
        var mark: Key
        /// Routed rows at or after `mark` that were taken, by event row.
        var done: DoneRows
        var changed = false

        var bit: Int64 { 1 << Int64(slot) }
    }

    static let slotsPerSource = 63

    private let db: Database
    private var loaded: [Int64: Log?] = [:]
    private var sourcesLoaded: Set<String> = []
    private var newestTimes: [String: Int64] = [:]

    init(_ db: Database) {
        self.db = db
    }

    /// The subscription's log, if it has one.
    func log(of key: Int64) throws -> Log? {
        if let log = loaded[key] { return log }
        let log = try FastStatement(
            db, sql: "SELECT log_source, log_slot, log_time, log_event, log_done FROM subscription_key WHERE id = ? AND log_slot IS NOT NULL"
        ).query([.integer(key)]) { row in
            Log(
                key: key, source: row.text(0), slot: Int(row.integer(1)), mark: Key(eventTime: row.integer(2), event: row.integer(3)),
                done: DoneRows(sorted: Self.decode(row.blob(4))))
        }.first
        loaded[key] = log
        return log
    }

    /// Every log of `source`.
    func logs(of source: String) throws -> [Log] {
        if !sourcesLoaded.contains(source) {
            sourcesLoaded.insert(source)
            let keys = try FastStatement(db, sql: "SELECT id FROM subscription_key WHERE log_source = ? AND log_slot IS NOT NULL")
                .query([.text(source)]) { $0.integer(0) }
            for key in keys { _ = try log(of: key) }
        }
        return loaded.values.compactMap { $0 }.filter { $0.source == source }
    }

    /// The newest event time stored for `source`, as this transaction has it; nil when none is.
    func newestTime(of source: String) throws -> Int64? {
        if let time = newestTimes[source] { return time == .min ? nil : time }
        let time = try FastStatement(db, sql: "SELECT max(event_time) FROM event WHERE source = ?")
            .query([.text(source)]) { $0.optionalInteger(0) }.first ?? nil
        newestTimes[source] = time ?? .min
        return time
    }

    /// A row of `source` at `time` was stored.
    func stored(source: String, time: Int64) throws {
        newestTimes[source] = max(try newestTime(of: source) ?? .min, time)
    }

    /// The log new events of `source` are queued in for `key`, given its first slot free in the source on first use;
    /// nil when it queues rows instead (its log is in another source, or the source's slots are taken).
    func logForNew(key: Int64, source: String) throws -> Log? {
        if let log = try log(of: key) { return log.source == source ? log : nil }
        let used = Set(try logs(of: source).map(\.slot))
        guard let slot = (0..<Self.slotsPerSource).first(where: { !used.contains($0) }) else { return nil }
        // Rows routed with this slot before (to a subscription since purged) all lie before the mark.
        let newest = try newestTime(of: source) ?? .min
        let mark = Key(eventTime: newest, event: (try maxEventRow()) + 1)
        try FastStatement(
            db, sql: "UPDATE subscription_key SET log_source = ?, log_slot = ?, log_time = ?, log_event = ?, log_done = x'' WHERE id = ?"
        ).run(.text(source), .integer(Int64(slot)), .integer(mark.eventTime), .integer(mark.event), .integer(key))
        let log = Log(key: key, source: source, slot: slot, mark: mark, done: DoneRows())
        loaded[key] = log
        return log
    }

    private func maxEventRow() throws -> Int64 {
        try FastStatement(db, sql: "SELECT max(id) FROM event").query([]) { $0.integer(0) }.first ?? 0
    }

    /// Whether the row `event` is queued in `key`'s log: one look-up of the row.
    func owes(key: Int64, eventTime: Int64, event: Int64) throws -> Bool {
        guard let log = try log(of: key), Key(eventTime: eventTime, event: event) >= log.mark, !log.done.contains(event) else {
            return false
        }
        let routing = try FastStatement(db, sql: "SELECT routing FROM event WHERE id = ? AND source = ?")
            .query([.integer(event), .text(log.source)]) { $0.integer(0) }.first ?? 0
        return routing & log.bit != 0
    }

    /// Takes those of `members` queued in `key`'s log, as delivered, dead or moved: returns their event rows. A
    /// member the store handed out from the log (`inLog`) is still there if it is at or after the mark and not taken:
    /// nothing else takes from a log. The others are looked up in the index.
    func take(key: Int64, _ members: [(eventTime: Int64, event: Int64, inLog: Bool)]) throws -> [Int64] {
        guard var log = try log(of: key) else { return [] }
        var taken: [Int64] = []
        var unsure: [(eventTime: Int64, event: Int64)] = []
        for member in members where Key(eventTime: member.eventTime, event: member.event) >= log.mark && !log.done.contains(member.event) {
            if member.inLog { taken.append(member.event) } else { unsure.append((member.eventTime, member.event)) }
        }
        if unsure.count == 1 {
            if try owes(key: key, eventTime: unsure[0].eventTime, event: unsure[0].event) { taken.append(unsure[0].event) }
        } else if !unsure.isEmpty {
            // One pass over the index between the first and the last: the members of a batch lie together.
            let wanted = Set(unsure.map(\.event))
            let keys = unsure.map { Key(eventTime: $0.eventTime, event: $0.event) }
            let (first, last) = (keys.min()!, keys.max()!)
            try FastStatement(db, sql: Self.span).step(
                [.text(log.source), .integer(first.eventTime), .integer(first.event), .integer(last.eventTime), .integer(last.event)]
            ) { row in
                let event = row.integer(1)
                if row.integer(2) & log.bit != 0, wanted.contains(event) { taken.append(event) }
                return true
            }
        }
        taken = log.done.insert(taken)
        guard !taken.isEmpty else { return [] }
        log.changed = true
        loaded[key] = log
        return taken
    }

    /// Takes a never-attempted delivery, as a row of `delivery` or from the log, to move it to `delivery_attempt`:
    /// false if it was neither. Taken from the log, its event row counts one more row that needs it.
    func takeQueued(key: Int64, eventTime: Int64, event: Int64) throws -> Bool {
        if try FastStatement(db, sql: "DELETE FROM delivery WHERE subscription = ? AND event_time = ? AND event = ?")
            .run(integers: key, eventTime, event) == 1
        {
            return true
        }
        guard try !take(key: key, [(eventTime, event, false)]).isEmpty else { return false }
        try holdAsRow(event)
        return true
    }

    /// Counts one more row of `delivery` or `delivery_attempt` that needs the event row `event`, now that a delivery
    /// of it has left a log for one.
    private func holdAsRow(_ event: Int64) throws {
        try FastStatement(db, sql: "UPDATE event SET pending = pending + 1 WHERE id = ?").run(.integer(event))
    }

    /// A range of the index, bounded on both sides by time so that the scan stops at its end (a row value's upper
    /// bound alone is a filter, and the scan went on to the source's last row).
    static let span = """
        SELECT event_time, id, routing FROM event
        WHERE source = ?1 AND event_time BETWEEN ?2 AND ?4 AND (event_time, id) >= (?2, ?3) AND (event_time, id) <= (?4, ?5)
        ORDER BY event_time, id
        """
    static let from = "SELECT event_time, id, routing FROM event WHERE source = ?1 AND (event_time, id) >= (?2, ?3) ORDER BY event_time, id"

    /// What ``owed(key:from:limit:scanning:counted:)`` found.
    struct Owed {
        var keys: [Key] = []
        /// Every row queued in the log up to this key (inclusive) is in `keys`; nil when the scan reached the end.
        var complete: Key?
        /// The last row the scan looked at.
        var lastScanned: Key?
    }

    /// The keys queued in `key`'s log from `from` on, in order, passing over at most `scanning` rows: up to `limit`
    /// of those `counted` by event row. A reader counts only rows it does not have in flight: counting those too, a
    /// draining subscription with a thousand in flight scanned ten times the rows it returned.
    func owed(
        key: Int64, from: Key? = nil, limit: Int, scanning: Int = .max, counted: (Int64) -> Bool = { _ in true }
    ) throws -> Owed {
        var owed = Owed()
        guard let log = try log(of: key), limit > 0 else { return owed }
        let start = max(from ?? log.mark, log.mark)
        var scanned = 0
        var counting = 0
        var last: Key?
        var ended = true
        try FastStatement(db, sql: Self.from).step([.text(log.source), .integer(start.eventTime), .integer(start.event)]) { row in
            let key = Key(eventTime: row.integer(0), event: row.integer(1))
            last = key
            scanned += 1
            if row.integer(2) & log.bit != 0, !log.done.contains(key.event) {
                owed.keys.append(key)
                if counted(key.event) { counting += 1 }
            }
            if counting == limit || scanned == scanning {
                ended = false
                return false
            }
            return true
        }
        owed.complete = ended ? nil : last
        owed.lastScanned = last
        return owed
    }

    /// How many rows `key`'s log holds: reads all of them.
    func count(key: Int64) throws -> Int {
        var total = 0
        var from: Key?
        while true {
            let owed = try owed(key: key, from: from, limit: 100_000, scanning: .max)
            total += owed.keys.count
            guard let complete = owed.complete else { return total }
            from = complete.next
        }
    }

    /// Drops up to `limit` rows of `key`'s log, as if taken: for a subscription purged. Returns how many.
    func drop(key: Int64, limit: Int) throws -> Int {
        guard var log = try log(of: key) else { return 0 }
        let owed = try owed(key: key, limit: limit, scanning: .max)
        _ = log.done.insert(owed.keys.map(\.event))
        log.changed = true
        loaded[key] = log
        return owed.keys.count
    }

    /// Moves each changed log's mark past the rows taken, deletes the event rows no log or delivery row needs any
    /// more, and stores the changed logs. Called once, before the transaction commits.
    func finish() throws {
        let changed = loaded.values.compactMap { $0 }.filter { $0.changed && !$0.done.isEmpty }
        for source in Set(changed.map(\.source)) {
            try advance(changed.filter { $0.source == source }, of: source)
        }
        for (key, entry) in loaded {
            guard var log = entry, log.changed else { continue }
            try save(log)
            log.changed = false
            loaded[key] = log
        }
    }

    /// Stores `log`'s mark and done list.
    private func save(_ log: Log) throws {
        try FastStatement(db, sql: "UPDATE subscription_key SET log_time = ?, log_event = ?, log_done = ? WHERE id = ?")
            .run(.integer(log.mark.eventTime), .integer(log.mark.event), .blob(Self.encode(log.done.rows)), .integer(log.key))
    }

    /// Moves the marks of `moving` (logs of `source` with rows taken) past their rows taken, in one pass over the
    /// index from the lowest: the logs of a source that all take every event move over the same rows, and a pass each
    /// cost as much as the rows a log no longer writes. Then collects the rows passed.
    private func advance(_ moving: [Log], of source: String) throws {
        var logs = moving
        var active = Array(logs.indices)
        // A log whose done list has grown past its limit (a request at its head hangs while the rest complete) has
        // the rows it still holds up to its last done one queued as rows instead, so that its mark moves past them:
        // a long list cost every take, commit and read of the log time in proportion to its length.
        let spilling = logs.map { $0.done.count > Self.doneLimit }
        var spilled: [(log: Int, key: Key)] = []
        // Done rows met, per log: removed once the pass is over.
        var met = logs.map { [Bool](repeating: false, count: $0.done.count) }
        var left = logs.map(\.done.count)
        var passed: [(key: Key, routing: Int64)] = []
        let start = logs.map(\.mark).min()!
        var last: Key?
        try FastStatement(db, sql: Self.ahead).step([.text(source), .integer(start.eventTime)]) { row in
            let here = Key(eventTime: row.integer(0), event: row.integer(1))
            last = here
            let routing = row.integer(2)
            var index = 0
            while index < active.count {
                let log = active[index]
                index += 1
                guard here >= logs[log].mark else { continue }
                if routing & logs[log].bit != 0 {
                    if let at = logs[log].done.index(of: here.event) {
                        met[log][at] = true
                        left[log] -= 1
                    } else if spilling[log] {
                        spilled.append((log, here))
                    } else {
                        // The first row it still has: its mark.
                        logs[log].mark = here
                        index -= 1
                        active.remove(at: index)
                        continue
                    }
                    passed.append((here, routing))
                }
                if left[log] == 0 {
                    logs[log].mark = here.next
                    index -= 1
                    active.remove(at: index)
                }
            }
            return !active.isEmpty
        }
        // The scan ran out with rows taken not met: none is stored any more (nothing deletes a row at or after a mark,
        // so none should be). Past the last row, then.
        for log in active {
            met[log] = met[log].map { _ in true }
            if let last, last >= logs[log].mark { logs[log].mark = last.next }
        }
        for log in logs.indices { logs[log].done.remove(where: met[log]) }
        for log in logs { loaded[log.key] = log }
        // Still queued, now as rows (the depth counts them either way), before the rows passed are collected.
        for (log, key) in spilled
        where try FastStatement(db, sql: "INSERT OR IGNORE INTO delivery (subscription, event_time, event) VALUES (?, ?, ?)")
            .run(integers: logs[log].key, key.eventTime, key.event) == 1
        {
            try holdAsRow(key.event)
        }
        try collect(passed, of: source)
    }

    /// The most rows a log lists as taken after its mark before it queues those it still holds before them as rows.
    static let doneLimit = 2_048

    static let ahead = "SELECT event_time, id, routing FROM event WHERE source = ?1 AND event_time >= ?2 ORDER BY event_time, id"

    /// Deletes those of `rows` (routed rows some log's mark just passed) that every log they were routed to has
    /// passed and no delivery row needs; those a delivery row still needs lose their routing, so that the last such
    /// row's removal deletes them (DeliveryRows).
    private func collect(_ rows: [(key: Key, routing: Int64)], of source: String) throws {
        var marks = [Key?](repeating: nil, count: 64)
        for log in try logs(of: source) { marks[log.slot] = log.mark }
        var free: [Int64] = []
        for (key, routing) in rows {
            var bits = routing
            var passed = true
            while bits != 0 {
                let slot = bits.trailingZeroBitCount
                bits &= bits - 1
                if let mark = marks[slot], key >= mark {
                    passed = false
                    break
                }
            }
            if passed { free.append(key.event) }
        }
        // A row several logs passed in this commit is listed by each.
        free.sort()
        free = free.enumerated().compactMap { index, row in index > 0 && free[index - 1] == row ? nil : row }
        var index = free.startIndex
        while index < free.endIndex {
            var end = index
            while end + 1 < free.endIndex, free[end + 1] == free[end] + 1 { end += 1 }
            let (first, last) = (free[index], free[end])
            let deleted = try FastStatement(db, sql: "DELETE FROM event WHERE id BETWEEN ? AND ? AND pending = 0").run(integers: first, last)
            if deleted < end - index + 1 {
                try FastStatement(db, sql: "UPDATE event SET routing = 0 WHERE id BETWEEN ? AND ? AND routing != 0").run(integers: first, last)
            }
            index = end + 1
        }
    }

    /// Moves the marks of `source`'s logs that hold nothing (queue depth 0, nothing taken after the mark) to just
    /// after its newest row: a subscription that takes few of a source's events would otherwise have every read of
    /// its empty log pass over all the rows stored since its last one, which another subscription's backlog can
    /// make a million. Called by ingest, once its depths are written.
    func skipIdle(source: String) throws {
        let idle = try FastStatement(
            db,
            sql: """
                SELECT k.id FROM subscription_key k LEFT JOIN queue_depth q ON q.subscription = k.name
                WHERE k.log_source = ? AND k.log_slot IS NOT NULL AND coalesce(q.n, 0) = 0 AND k.log_done = x''
                """
        ).query([.text(source)]) { $0.integer(0) }
        guard !idle.isEmpty,
            let newest = try FastStatement(db, sql: "SELECT event_time, id FROM event WHERE source = ? ORDER BY event_time DESC, id DESC LIMIT 1")
                .query([.text(source)], { Key(eventTime: $0.integer(0), event: $0.integer(1)) }).first
        else { return }
        for key in idle {
            guard var log = try log(of: key), log.done.isEmpty, log.mark <= newest else { continue }
            log.mark = newest.next
            try save(log)
            loaded[key] = log
        }
    }

    /// Frees `key`'s slot, its log empty (a purged subscription): rows still routed to it lie before the mark a
    /// new holder of the slot starts at.
    func release(key: Int64) throws {
        try FastStatement(db, sql: "UPDATE subscription_key SET log_source = NULL, log_slot = NULL, log_done = x'' WHERE id = ?")
            .run(.integer(key))
        loaded[key] = .some(nil)
    }

    /// Sorted event rows as deltas, a varint each: a drain's done rows are mostly consecutive, a byte each.
    static func encode(_ rows: [Int64]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(rows.count + 8)
        var previous: Int64 = 0
        for row in rows {
            var delta = UInt64(bitPattern: row &- previous)
            previous = row
            while delta >= 0x80 {
                bytes.append(UInt8(delta & 0x7f) | 0x80)
                delta >>= 7
            }
            bytes.append(UInt8(delta))
        }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) -> [Int64] {
        var rows: [Int64] = []
        var previous: Int64 = 0
        var delta: UInt64 = 0
        var shift: UInt64 = 0
        for byte in bytes {
            delta |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 != 0 {
                shift += 7
                continue
            }
            previous = previous &+ Int64(bitPattern: delta)
            rows.append(previous)
            (delta, shift) = (0, 0)
        }
        return rows
    }
}

/// A log's rows taken after its mark, by event row: sorted, for look-ups by bisection without hashing, which was
/// most of what taking a row cost.
struct DoneRows {
    private(set) var rows: [Int64] = []

    init() {}

    init(sorted rows: [Int64]) {
        self.rows = rows
    }

    var count: Int { rows.count }
    var isEmpty: Bool { rows.isEmpty }

    /// Where `row` is, if it is here.
    func index(of row: Int64) -> Int? {
        var (low, high) = (0, rows.count)
        while low < high {
            let middle = (low + high) / 2
            if rows[middle] < row { low = middle + 1 } else { high = middle }
        }
        return low < rows.count && rows[low] == row ? low : nil
    }

    func contains(_ row: Int64) -> Bool { index(of: row) != nil }

    /// Adds `new`; returns those that were not here already, sorted.
    mutating func insert(_ new: [Int64]) -> [Int64] {
        guard !new.isEmpty else { return [] }
        var added = new.sorted()
        added = added.enumerated().compactMap { index, row in
            (index > 0 && added[index - 1] == row) || contains(row) ? nil : row
        }
        guard !added.isEmpty else { return [] }
        if let last = rows.last, last < added[0] {
            rows += added
        } else {
            var merged: [Int64] = []
            merged.reserveCapacity(rows.count + added.count)
            var (i, j) = (0, 0)
            while i < rows.count || j < added.count {
                if j == added.count || (i < rows.count && rows[i] < added[j]) {
                    merged.append(rows[i])
                    i += 1
                } else {
                    merged.append(added[j])
                    j += 1
                }
            }
            rows = merged
        }
        return added
    }

    /// Removes the rows at the places `remove` marks.
    mutating func remove(where remove: [Bool]) {
        rows = zip(rows, remove).compactMap { $1 ? nil : $0 }
    }
}
