import IntilerySimulator
import RelayCore
import Testing

/// The planner's rules, checked over random arrival orders (late rows included), failures, retries and commit delays,
/// against an in-memory outbox that reads the way the state store does.
@Suite struct DeliveryPlannerTests {
    static let modes: [(strict: Bool, batchSize: Int, concurrency: Int)] = [
        (true, 1, 1), (true, 5, 1), (false, 1, 4), (false, 5, 3), (false, 3, 1),
    ]

    @Test(arguments: 0..<modes.count)
    func orderingAndBatchRulesHoldOverRandomRuns(mode: Int) throws {
        let (strict, batchSize, concurrency) = Self.modes[mode]
        for seed in 1...60 {
            var model = OutboxModel(
                planner: DeliveryPlanner(subscription: "s", strict: strict, batchSize: batchSize, concurrency: concurrency),
                random: SeededRandom(seed: UInt64(seed * 7919 + mode)))
            try model.runRandomly(steps: 300)
            try model.drain()
            #expect(model.queued.isEmpty, "seed \(seed): \(model.queued.count) rows never went")
            #expect(model.sends > 0, "seed \(seed): nothing was sent")
        }
    }

    @Test func aStrictHeadThatIsNotDueHoldsBackEverythingBehindIt() {
        let planner = DeliveryPlanner(subscription: "s", strict: true, batchSize: 5, concurrency: 1)
        let now = Timestamp(millisecondsSinceEpoch: 1_000)
        let rows = [
            Self.row(1, time: 10, due: 2_000),
            Self.row(2, time: 20, due: 0),
        ]
        #expect(planner.plan(rows, inFlight: .init(), now: now).isEmpty)
        #expect(planner.plan(rows, inFlight: .init(), now: Timestamp(millisecondsSinceEpoch: 2_000)).map { $0.deliveries.map(\.id) } == [[1, 2]])
    }

    @Test func aStoredBatchGoesWholeInItsStoredOrderAndIsNotComposedAgain() {
        let planner = DeliveryPlanner(subscription: "s", strict: false, batchSize: 5, concurrency: 2)
        var late = Self.row(1, time: 5, due: 0)
        late.batchID = "b:batch-x"
        late.batchPosition = 1
        var early = Self.row(2, time: 50, due: 0)
        early.batchID = "b:batch-x"
        early.batchPosition = 0
        let plan = planner.plan([late, early, Self.row(3, time: 1, due: 0)], inFlight: .init(), now: .init(millisecondsSinceEpoch: 0))
        #expect(plan.count == 2)
        #expect(plan[0].deliveries.map(\.id) == [2, 1] && plan[0].composedBatch == nil)
        #expect(plan[1].deliveries.map(\.id) == [3] && plan[1].composedBatch != nil)
    }

    @Test func batchesComposedAheadOfAFreeSlotAreFullOrStoredOnes() {
        let planner = DeliveryPlanner(subscription: "s", strict: false, batchSize: 3, concurrency: 2)
        let now = Timestamp(millisecondsSinceEpoch: 0)
        let rows = (1...8).map { Self.row(Int64($0), time: Int64($0), due: 0) }
        // Every slot busy: two full batches ahead; the two rows left would make a short one, and wait.
        let busy = planner.plan(rows, inFlight: .init(requests: 2), now: now, wanted: 0, ahead: 3)
        #expect(busy.map { $0.deliveries.map(\.id) } == [[1, 2, 3], [4, 5, 6]])
        // A free slot takes what there is, short or not; ahead of it, only full batches.
        let one = planner.plan(Array(rows.prefix(4)), inFlight: .init(requests: 1), now: now, wanted: 1, ahead: 3)
        #expect(one.map { $0.deliveries.map(\.id) } == [[1, 2, 3]])
        let short = planner.plan(Array(rows.prefix(2)), inFlight: .init(requests: 1), now: now, wanted: 1, ahead: 3)
        #expect(short.map { $0.deliveries.map(\.id) } == [[1, 2]])
        // A batch stored before goes ahead whatever its size.
        var stored = Self.row(9, time: 0, due: 0)
        stored.batchID = "s:batch-x"
        stored.batchPosition = 0
        #expect(planner.plan([stored], inFlight: .init(requests: 2), now: now, wanted: 0, ahead: 1).map { $0.deliveries.map(\.id) } == [[9]])
        // Single events and strict subscriptions are never planned ahead.
        let single = DeliveryPlanner(subscription: "s", strict: false, batchSize: 1, concurrency: 2)
        #expect(single.plan(rows, inFlight: .init(requests: 2), now: now, wanted: 0, ahead: 3).isEmpty)
        let strict = DeliveryPlanner(subscription: "s", strict: true, batchSize: 3, concurrency: 1)
        #expect(strict.plan(rows, inFlight: .init(requests: 1), now: now, wanted: 0, ahead: 3).isEmpty)
    }

    @Test func nothingIsPlannedBeyondTheFreeSlotsOrForUnsettledRows() {
        let planner = DeliveryPlanner(subscription: "s", strict: false, batchSize: 1, concurrency: 2)
        let rows = (1...5).map { Self.row(Int64($0), time: Int64($0), due: 0) }
        let now = Timestamp(millisecondsSinceEpoch: 0)
        #expect(planner.plan(rows, inFlight: .init(requests: 1, unsettled: [1]), now: now).map { $0.deliveries[0].id } == [2])
        #expect(planner.plan(rows, inFlight: .init(requests: 2), now: now).isEmpty)
        let strict = DeliveryPlanner(subscription: "s", strict: true, batchSize: 1, concurrency: 8)
        #expect(strict.freeSlots(.init(failedHeadPending: true)) == 0)
        #expect(strict.freeSlots(.init()) == 1)
    }

    static func row(_ id: Int64, time: Int64, due: Int64) -> Delivery {
        Delivery(
            id: id, subscription: "s", eventID: "evt-\(id)", eventTime: Timestamp(millisecondsSinceEpoch: time), action: "x",
            timeValue: "\(time)", payload: [], attempts: 0, firstAttemptAt: nil, batchID: nil,
            nextAttemptAt: Timestamp(millisecondsSinceEpoch: due))
    }
}

/// An outbox, a dispatcher's bookkeeping and a receiver, driven by random steps; every send is checked against the
/// planner's rules.
private struct OutboxModel {
    struct Failure: Error, CustomStringConvertible { let description: String }

    /// A request answered whose outcome is not committed yet.
    struct Answered {
        var ids: [Int64]
        var decision: DeliveryOutcome.Decision
    }

    let planner: DeliveryPlanner
    var random: SeededRandom
    var now: Int64 = 1_000_000
    var nextID: Int64 = 1
    /// The outbox: rows not yet delivered or dead-lettered (by commit).
    var queued: [Int64: Delivery] = [:]
    var arrivedAt: [Int64: Int] = [:]
    var step = 0
    var inFlight = DeliveryPlanner.InFlight()
    var sending: [[Int64]] = []
    /// Committed in order, as the outcome writer does.
    var answered: [Answered] = []
    var failedHead: [Int64]?
    /// Rows answered 2xx, not committed yet: no longer in line.
    var deliveredUncommitted = Set<Int64>()
    /// Each batch as first sent: its members in body order, and the step it was composed at.
    var batches: [String: (members: [Int64], composedAt: Int)] = [:]
    var sends = 0
    var failuresAllowed = true

    init(planner: DeliveryPlanner, random: SeededRandom) {
        self.planner = planner
        self.random = random
    }

    mutating func runRandomly(steps: Int) throws {
        for _ in 0..<steps {
            step += 1
            switch Int.random(in: 0..<10, using: &random) {
            case 0...2: arrive()
            case 3...5: try plan()
            case 6, 7: answer()
            case 8: commit()
            default: now += Int64.random(in: 0...3_000, using: &random)
            }
        }
    }

    /// Lets every request succeed and time pass until nothing is left or the planner stops making progress.
    mutating func drain() throws {
        failuresAllowed = false
        for _ in 0..<20_000 where !(queued.isEmpty && sending.isEmpty && answered.isEmpty) {
            step += 1
            try plan()
            answer()
            commit()
            now += 1_000
        }
    }

    mutating func arrive() {
        for _ in 0..<Int.random(in: 1...4, using: &random) {
            let id = nextID
            nextID += 1
            // Event times jump around the clock: some rows arrive late, earlier than rows already queued or sent.
            let time = now + Int64.random(in: -5_000...1_000, using: &random)
            queued[id] = Delivery(
                id: id, subscription: "s", eventID: "evt-\(id)", eventTime: Timestamp(millisecondsSinceEpoch: time),
                action: "x", timeValue: "\(time)", payload: [], attempts: 0, firstAttemptAt: nil, batchID: nil,
                nextAttemptAt: Timestamp(millisecondsSinceEpoch: now))
            arrivedAt[id] = step
        }
    }

    /// What ``StateStore/deliveries(subscription:due:limit:strict:excluding:)`` returns.
    func read(limit: Int) -> [Delivery] {
        let candidates = queued.values.filter { !inFlight.unsettled.contains($0.id) }
        let ordered = planner.strict
            ? candidates.sorted { ($0.eventTime, $0.id) < ($1.eventTime, $1.id) }
            : candidates.filter { $0.nextAttemptAt.millisecondsSinceEpoch <= now }
                .sorted { ($0.nextAttemptAt, $0.eventTime, $0.id) < ($1.nextAttemptAt, $1.eventTime, $1.id) }
        var rows = Array(ordered.prefix(limit))
        for batch in Set(rows.compactMap(\.batchID)) {
            let whole = candidates.filter { $0.batchID == batch }.sorted { $0.batchPosition! < $1.batchPosition! }
            guard let at = rows.firstIndex(where: { $0.batchID == batch }) else { continue }
            rows.removeAll { $0.batchID == batch }
            rows.insert(contentsOf: whole, at: min(at, rows.count))
        }
        return rows
    }

    mutating func plan() throws {
        inFlight.requests = sending.count
        inFlight.failedHeadPending = failedHead != nil
        let free = planner.freeSlots(inFlight)
        guard free > 0 else { return }
        let current = Timestamp(millisecondsSinceEpoch: now)
        for request in planner.plan(read(limit: planner.rowsToRead(for: free)), inFlight: inFlight, now: current) {
            try send(request)
        }
    }

    mutating func send(_ request: DeliveryPlanner.Request) throws {
        let ids = request.deliveries.map(\.id)
        func fail(_ why: String) -> Failure { Failure(description: "step \(step), sending \(ids): \(why)") }
        guard !ids.isEmpty else { throw fail("an empty request") }
        guard sending.count < planner.slots else { throw fail("more requests than slots") }
        if planner.strict && failedHead != nil { throw fail("strict: sent while a failed head is uncommitted") }
        for id in ids {
            guard let row = queued[id] else { throw fail("row \(id) is not queued") }
            if inFlight.unsettled.contains(id) { throw fail("row \(id) is already out or uncommitted") }
            if row.nextAttemptAt.millisecondsSinceEpoch > now { throw fail("row \(id) is not due") }
        }
        if ids.count > planner.batchSize { throw fail("larger than batchSize") }

        // A batch never changes: members, order and id as first composed.
        if let batch = request.composedBatch {
            for id in ids where queued[id]!.batchID != nil { throw fail("row \(id) composed into a second batch") }
            batches[batch] = (ids, step)
            for (position, id) in ids.enumerated() {
                queued[id]!.batchID = batch
                queued[id]!.batchPosition = position
            }
        } else if let batch = request.deliveries[0].batchID {
            guard let first = batches[batch] else { throw fail("batch \(batch) was never composed") }
            if first.members != ids { throw fail("batch \(batch) was \(first.members), now \(ids)") }
        } else if planner.batchSize > 1 {
            throw fail("a batched subscription sent loose rows")
        }

        // Strict: everything earlier in line is in this request, or came after its batch was composed.
        if planner.strict {
            let last = request.deliveries.map { queued[$0.id]! }.max { ($0.eventTime, $0.id) < ($1.eventTime, $1.id) }!
            let since = request.deliveries[0].batchID.flatMap { batches[$0]?.composedAt } ?? step
            for row in queued.values
            where !ids.contains(row.id) && !deliveredUncommitted.contains(row.id) && (row.eventTime, row.id) < (last.eventTime, last.id)
                && arrivedAt[row.id]! <= since
            {
                throw fail("strict: \(row.id) (time \(row.eventTime.millisecondsSinceEpoch)) is earlier and still queued")
            }
        }
        sending.append(ids)
        inFlight.unsettled.formUnion(ids)
        sends += 1
    }

    mutating func answer() {
        guard !sending.isEmpty else { return }
        let ids = sending.remove(at: Int.random(in: 0..<sending.count, using: &random))
        let decision: DeliveryOutcome.Decision
        switch failuresAllowed ? Int.random(in: 0..<6, using: &random) : 0 {
        case 0...2: decision = .delivered
        case 3, 4: decision = .retry(at: Timestamp(millisecondsSinceEpoch: now + Int64.random(in: 0...10_000, using: &random)))
        default: decision = .deadLetter(reason: "http_400")
        }
        if decision == .delivered { deliveredUncommitted.formUnion(ids) }
        if planner.strict && decision != .delivered { failedHead = ids }
        answered.append(Answered(ids: ids, decision: decision))
    }

    mutating func commit() {
        guard !answered.isEmpty else { return }
        let outcome = answered.removeFirst()
        for id in outcome.ids {
            switch outcome.decision {
            case .delivered, .deadLetter: queued[id] = nil
            case .retry(let at):
                queued[id]!.attempts += 1
                queued[id]!.nextAttemptAt = at
            }
        }
        deliveredUncommitted.subtract(outcome.ids)
        inFlight.unsettled.subtract(outcome.ids)
        if failedHead == outcome.ids { failedHead = nil }
    }
}
