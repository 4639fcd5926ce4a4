@testable import RelayCore
import Testing

/// The daemon gives freed heap memory back once per burst of deliveries, when it is over: never while deliveries
/// run, and not again while it stays quiet.
@Suite struct HeapTrimTests {
    @Test func trimsOnceWhenABurstOfDeliveriesIsOver() {
        var heap = HeapTrim()
        // (delivered, pending) as successive maintenance passes read them, and whether each pass trims
        let passes: [(delivered: Int, pending: Int, trims: Bool)] = [
            (0, 0, false),  // nothing delivered yet
            (0, 40, false),  // a backlog queued, nothing delivered yet
            (5_000, 10, false), (60_000, 10, false),  // a drain: busy
            (90_000, 0, true),  // over, the queue empty: trim
            (90_000, 0, false), (90_000, 0, false),  // still quiet: once is enough
            (90_001, 5, false),  // a delivery, events still queued (a webhook retrying)
            (90_001, 5, true),  // no delivery since the last pass: over too
            (90_001, 5, false),
        ]
        for (index, pass) in passes.enumerated() {
            #expect(heap.shouldTrim(delivered: pass.delivered, pending: pass.pending) == pass.trims, "pass \(index): \(pass)")
        }
    }

    /// The maintenance passes start before the pipeline has a config, so a short drain can be over at the first
    /// pass that reads the counts.
    @Test func aBurstOverBeforeTheFirstPassIsTrimmedAtIt() {
        var heap = HeapTrim()
        let first = heap.shouldTrim(delivered: 100_000, pending: 0)
        let second = heap.shouldTrim(delivered: 100_000, pending: 0)
        #expect(first)
        #expect(!second)
    }
}
