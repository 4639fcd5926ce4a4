import Foundation
import RelayCore

/// The state store's writer alone, as a batched drain uses it, one write after another: pages queued three to a
/// commit; batches of 50 composed per subscription, every subscription's at once, as the dispatchers a hand-off wakes
/// compose; outcomes committed about 1,650 deliveries at a time, each subscription with about 16 batches composed and
/// not yet answered, as its dispatcher keeps ahead. In a batched drain the writer's transactions fill 93-96% of the
/// time, and timed alone it takes 9 µs per event where the whole relay spends 15 µs of CPU with one subscription (22
/// of 38 with five, on 2 cores). Without HTTP and threads competing for the cores, it is repeatable to a few percent
/// where an end-to-end drain varies by 15%.
struct StoreWriterBenchmark {
    let events: Int
    let subscriptions: Int

    struct Result {
        var ingest: Duration = .zero
        var compose: Duration = .zero
        var record: Duration = .zero
        var events = 0
        var total: Duration { ingest + compose + record }

        func microsecondsPerEvent(_ duration: Duration) -> Double {
            Double(duration / .nanoseconds(1)) / 1_000 / Double(max(events, 1))
        }
    }

    static let pageSize = 100
    static let pagesPerCommit = 3
    static let batchSize = 50
    static let deliveriesPerOutcomeCommit = 1_650
    static let batchesAhead = 16

    func run() async throws -> Result {
        let directory = try EndToEndBenchmark.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let names = (0..<subscriptions).map { "s\($0)" }
        // Every subscription has a limit (`maxQueued`, 1,000,000 unless set), and the poller passes them all.
        let queueLimits = Dictionary(uniqueKeysWithValues: names.map { ($0, 1_000_000) })
        // The simulator's events: 365 bytes as received, ids as the API's.
        let padding = String(repeating: "x", count: 300)
        var result = Result()
        var pending: [String: [Delivery]] = [:]
        var outcomes: [DeliveryOutcome] = []
        var outcomeDeliveries = 0
        // Batches composed, oldest first, answered once more than `ahead` are waiting behind them.
        var unanswered: [DeliveryOutcome] = []
        let ahead = Self.batchesAhead * subscriptions
        var sequence = 0
        let clock = ContinuousClock()
        while sequence < events {
            var pages: [PageCommit] = []
            for _ in 0..<Self.pagesPerCommit where sequence < events {
                let count = min(Self.pageSize, events - sequence)
                let routed = (sequence..<sequence + count).map { index in
                    let id = String(format: "evt-%08d-6f1c2d40", index)
                    let raw = Array(#"{"eventID":"\#(id)","action":"click","time":"\#(index)","data":"\#(padding)"}"#.utf8)
                    let event = Event(
                        id: id, time: Timestamp(millisecondsSinceEpoch: 1_700_000_000_000 + Int64(index)), action: "click",
                        timeValue: .string("\(index)"), raw: raw)
                    return RoutedEvent(event: event, subscriptions: names)
                }
                sequence += count
                pages.append(PageCommit(
                    events: routed, advance: MarkAdvance(live: Timestamp(millisecondsSinceEpoch: 1_700_000_000_000 + Int64(sequence)))))
            }
            let now = Timestamp(millisecondsSinceEpoch: 1_800_000_000_000)
            let start = clock.now
            let queued = try await store.enqueue(source: "bench", pages: pages, queueLimits: queueLimits, now: now)
            result.ingest += clock.now - start
            for name in names { pending[name, default: []] += queued.handOff[name] ?? [] }

            // Each subscription composes what it has in full batches, one call per subscription, all at once, as the
            // dispatchers the commit's hand-off wakes do.
            var composed: [[(id: String, deliveries: [Delivery])]] = []
            for name in names {
                let rows = pending[name] ?? []
                let full = rows.count / Self.batchSize * Self.batchSize
                guard full > 0 else { continue }
                pending[name] = Array(rows[full...])
                composed.append(stride(from: 0, to: full, by: Self.batchSize).map { offset in
                    // Every member names its batch, as the dispatcher's do: an outcome finds its batch by that name.
                    let id = "\(name):batch-\(rows[offset].id)"
                    let members = rows[offset..<offset + Self.batchSize].enumerated().map { position, row in
                        var row = row
                        row.batchID = id
                        row.batchPosition = position
                        return row
                    }
                    return (id: id, deliveries: Array(members))
                })
            }
            let composing = clock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for batches in composed { group.addTask { try await store.assignBatches(batches) } }
                try await group.waitForAll()
            }
            result.compose += clock.now - composing
            for batch in composed.joined() {
                unanswered.append(DeliveryOutcome(deliveries: batch.deliveries, decision: .delivered, attemptedAt: now, status: 200))
            }
            let answered = sequence >= events ? unanswered.count : max(unanswered.count - ahead, 0)
            for outcome in unanswered.prefix(answered) {
                outcomes.append(outcome)
                outcomeDeliveries += outcome.deliveries.count
            }
            unanswered.removeFirst(answered)
            if outcomeDeliveries >= Self.deliveriesPerOutcomeCommit || sequence >= events {
                let recording = clock.now
                try await store.record(outcomes)
                result.record += clock.now - recording
                (outcomes, outcomeDeliveries) = ([], 0)
            }
        }
        result.events = events
        return result
    }

    static func describe(_ result: Result, subscriptions: Int) -> String {
        String(
            format: "store writer, %d subscription%@: %.2f µs per event (queueing %.2f, composing %.2f, recording %.2f), %d events",
            subscriptions, subscriptions == 1 ? "" : "s", result.microsecondsPerEvent(result.total), result.microsecondsPerEvent(result.ingest),
            result.microsecondsPerEvent(result.compose), result.microsecondsPerEvent(result.record), result.events)
    }
}
