import GRDB
import Synchronization

/// Batches composed from never-attempted deliveries and not yet answered, as stored: one row per batch naming its
/// members in body order, while the members stay queued where ingest put them (the log, or `delivery`).
///
/// Fixing a batch used to move each member from `delivery` to `delivery_attempt` and its two indexes: seven B-tree
/// changes per event between its composition and its removal, where one row per batch does. A batch leaves this
/// form at its first answer: delivered or dead, its row goes with its members; to be retried, its members move to
/// `delivery_attempt` with its id and their places, as any attempted row. The maxAge sweep, taking some members,
/// moves the rest so too.
struct ComposedBatches {
    struct Member: Equatable {
        var eventTime: Int64
        var event: Int64
    }

    /// Members in body order, by batch id.
    private(set) var members: [String: [Member]] = [:]
    /// Each member's batch and place, by event row, once ``indexMembers()`` has built it.
    private(set) var place: [Int64: (batch: String, position: Int)] = [:]
    private var indexed = false
    /// The lowest and highest event row of any member, when there is one.
    private var memberRows: ClosedRange<Int64>?

    /// The subscription's stored batches; few: they are the ones in flight or composed ahead, or left by a stop.
    /// Without `indexingMembers`, ``place`` is left empty until ``indexMembers()``: an outcome names its batch, and
    /// indexing the 800 and more members of a draining subscription's batches cost its commit more than its rows.
    init(subscription key: Int64, _ db: Database, indexingMembers: Bool = true) throws {
        let rows = try FastStatement(db, sql: StateStore.deliveryQueries["composed batches"]!)
            .query([.integer(key)]) { ($0.text(0), Self.decode($0.blob(1))) }
        for (batch, members) in rows { add(batch, members) }
        if indexingMembers { indexMembers() }
    }

    /// The batch and place of the member with event row `event`, if one is: a read asks for every row it reads,
    /// which in a draining subscription all come after the members of its batches composed ahead, so the index is
    /// built only for a row within their range.
    mutating func placeOfMember(_ event: Int64) -> (batch: String, position: Int)? {
        guard let memberRows, memberRows.contains(event) else { return nil }
        indexMembers()
        return place[event]
    }

    /// Only the stored batches among `batches`, members not indexed: what outcomes that name their batches need.
    /// A draining subscription has its 16 batches composed ahead stored, and reading them all for each recording
    /// commit cost a fifth as much as removing the delivered rows.
    init(subscription key: Int64, batches: some Sequence<String>, _ db: Database) throws {
        let read = try FastStatement(db, sql: StateStore.deliveryQueries["composed batch"]!)
        for batch in batches {
            for members in try read.query([.integer(key), .text(batch)], { Self.decode($0.blob(0)) }) { add(batch, members) }
        }
    }

    private mutating func add(_ batch: String, _ members: [Member]) {
        self.members[batch] = members
        guard let low = members.lazy.map(\.event).min(), let high = members.lazy.map(\.event).max() else { return }
        memberRows = memberRows.map { min($0.lowerBound, low)...max($0.upperBound, high) } ?? low...high
    }

    /// Fills ``place``.
    mutating func indexMembers() {
        guard !indexed else { return }
        indexed = true
        place.reserveCapacity(members.values.reduce(0) { $0 + $1.count })
        for (batch, members) in members {
            for (position, member) in members.enumerated() { place[member.event] = (batch, position) }
        }
    }

    /// The stored batches that `deliveries` are members of.
    mutating func batches(of deliveries: [Delivery]) -> Set<String> {
        guard deliveries.allSatisfy({ $0.batchID != nil }) else {
            // Rows that do not name their batch (composed by a caller that kept no ids): found by their event rows.
            indexMembers()
            return Set(deliveries.compactMap { place[$0.id]?.batch })
        }
        var batches: Set<String> = []
        var last: String?
        for delivery in deliveries {
            guard let batch = delivery.batchID, batch != last else { continue }
            last = batch
            if members[batch] != nil { batches.insert(batch) }
        }
        return batches
    }

    /// Stores a batch of rows queued in `delivery`, in body order.
    static func store(_ batch: String, subscription key: Int64, members: [Member], _ db: Database) throws {
        try FastStatement(db, sql: "INSERT OR REPLACE INTO composed_batch (subscription, batch_id, members) VALUES (?, ?, ?)")
            .run(.integer(key), .text(batch), .blob(encode(members)))
    }

    /// Forgets a batch that was answered; 1 if it was stored in this form, else 0.
    @discardableResult
    static func forget(_ batch: String, subscription key: Int64, _ db: Database) throws -> Int {
        try FastStatement(db, sql: "DELETE FROM composed_batch WHERE subscription = ? AND batch_id = ?").run(.integer(key), .text(batch))
    }

    /// After an answer that removed `answered` (delivered, or dead): forgets the batch if they were all its members,
    /// else spills the rest (a batch sent as single events after `batchSize` went down).
    mutating func settle(
        _ batch: String, answered: [Delivery], subscription key: Int64, logs: SubscriptionLogs, _ db: Database
    ) throws {
        guard let members = members[batch] else { return }
        // Usually the answer carried the batch whole, in body order: then it is all of them without a set to build.
        let whole = answered.count == members.count && zip(answered, members).allSatisfy { $0.id == $1.event }
        if whole || members.allSatisfy({ [removed = Set(answered.map(\.id))] in removed.contains($0.event) }) {
            try Self.forget(batch, subscription: key, db)
            drop(batch)
        } else {
            try spill(batch, subscription: key, logs: logs, db)
        }
    }

    /// Moves a batch's members still queued to `delivery_attempt`, with its id and their places and due as
    /// they were, and forgets its row: for a path that takes some members and not the rest (a retry, the maxAge
    /// sweep), after which the batch is an attempted one like any other.
    mutating func spill(_ batch: String, subscription key: Int64, logs: SubscriptionLogs, _ db: Database) throws {
        guard let members = members[batch] else { return }
        let move = try QueuedToBatch(db, logs: logs)
        for (position, member) in members.enumerated() {
            try move(subscription: key, eventTime: member.eventTime, event: member.event, batch: batch, position: position)
        }
        try Self.forget(batch, subscription: key, db)
        drop(batch)
    }

    private mutating func drop(_ batch: String) {
        let dropped = members.removeValue(forKey: batch) ?? []
        guard indexed else { return }
        for member in dropped { place[member.event] = nil }
    }

    /// 16 bytes a member: its event time and event row, little-endian.
    static func encode(_ members: [Member]) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: members.count * 16) { buffer, count in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            for (index, member) in members.enumerated() {
                raw.storeBytes(of: member.eventTime.littleEndian, toByteOffset: index * 16, as: Int64.self)
                raw.storeBytes(of: member.event.littleEndian, toByteOffset: index * 16 + 8, as: Int64.self)
            }
            count = members.count * 16
        }
    }

    static func decode(_ bytes: [UInt8]) -> [Member] {
        bytes.withUnsafeBytes { raw in
            (0..<raw.count / 16).map { index in
                Member(
                    eventTime: Int64(littleEndian: raw.loadUnaligned(fromByteOffset: index * 16, as: Int64.self)),
                    event: Int64(littleEndian: raw.loadUnaligned(fromByteOffset: index * 16 + 8, as: Int64.self)))
            }
        }
    }
}

/// Moves a never-attempted delivery, a row of `delivery` or in the subscription's log, to `delivery_attempt` under a
/// batch's id, at its place, due as it was (`due`, or its event's queue time, which is when a never-attempted
/// delivery is due): how a batch's members become attempted rows, whether the batch was composed with an attempted
/// row or spilled from ``ComposedBatches``.
struct QueuedToBatch {
    private let logs: SubscriptionLogs
    private let move: FastStatement

    init(_ db: Database, logs: SubscriptionLogs) throws {
        self.logs = logs
        move = try FastStatement(
            db,
            sql: """
                INSERT INTO delivery_attempt (subscription, event_time, event, next_attempt_at, attempts, batch_id, batch_seq)
                SELECT ?1, ?2, ?3, coalesce(?6, e.queued_at), 0, ?4, ?5 FROM event e WHERE e.id = ?3
                """)
    }

    /// False when the delivery was not queued (attempted already, or gone).
    @discardableResult
    func callAsFunction(
        subscription key: Int64, eventTime: Int64, event: Int64, batch: String, position: Int, due: Int64? = nil
    ) throws -> Bool {
        guard try logs.takeQueued(key: key, eventTime: eventTime, event: event) else { return false }
        try move.run(
            .integer(key), .integer(eventTime), .integer(event), .text(batch), .integer(Int64(position)), due.map(FastValue.integer) ?? .null)
        return true
    }
}

/// The compositions ``StateStore/assignBatches(_:)`` was given and has not committed: those waiting for a
/// transaction, and those in the one running, whose callers it resumes when it ends.
final class CompositionCommits: Sendable {
    struct Waiting {
        var batches: [(id: String, deliveries: [Delivery])]
        var done: CheckedContinuation<Result<Void, StoreError>, Never>
    }

    struct State {
        var waiting: [Waiting] = []
        var inTransaction: [Waiting] = []
        /// A task is committing: a new composition waits for its next transaction.
        var committing = false
    }

    let state = Mutex(State())
}
