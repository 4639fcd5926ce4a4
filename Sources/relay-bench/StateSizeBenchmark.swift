import Foundation
import RelayCore
import RelayJSON

/// What queued events cost on disk with one subscription and with five, the same events queued for each: the
/// payload is stored once, so five subscriptions add only their small delivery rows.
///
/// The end-to-end drain's state figure is the most the file held while draining, and with five subscriptions an
/// event stays until the slowest has it, so more events are held at the peak; this compares equal queues.
struct StateSizeBenchmark {
    let events: Int

    /// The state file's size in MiB with one subscription and with five.
    func measure() async throws -> (one: Double, five: Double) {
        (try await size(subscriptions: 1), try await size(subscriptions: 5))
    }

    func describe(_ sizes: (one: Double, five: Double)) -> String {
        String(
            format: "state size: %d queued events, 1 subscription %.1f MiB, 5 subscriptions %.1f MiB (%.2f times, target under 1.3)",
            events, sizes.one, sizes.five, sizes.five / sizes.one)
    }

    /// The state file's size in MiB once `events` events of about 365 bytes are queued for `subscriptions`.
    func size(subscriptions: Int) async throws -> Double {
        let directory = try EndToEndBenchmark.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let names = (0..<subscriptions).map { "s\($0)" }
        let start = Int64(Date().timeIntervalSince1970 * 1000) - Int64(events)
        do {
            let store = try StateStore.open(directory: directory.path)
            var next = 0
            while next < events {
                // Pages of 100, as the API gives them.
                let page = (next..<min(next + 100, events)).map { n in
                    RoutedEvent(event: Self.event(n, time: start + Int64(n)), subscriptions: names)
                }
                let last = Timestamp(millisecondsSinceEpoch: start + Int64(next + page.count))
                _ = try await store.enqueue(source: "bench", events: page, cursor: last, now: last)
                next += page.count
            }
        }
        // The store is closed here: SQLite checkpoints the WAL into the file and removes it.
        return Double(EndToEndBenchmark.stateBytes(in: directory)) / 1_048_576
    }

    /// An event shaped like the simulator's: an id, a time, an action and a few properties, about 365 bytes.
    static func event(_ n: Int, time: Int64) -> Event {
        let id = "evt-\(n)"
        let raw = #"{"eventID":"\#(id)","timestamp":"\#(time)","event":"email_click","userId":"user-\#(n % 5000)","# +
            #""properties":{"campaign":"winter-sale-2026","link":"https://shop.example.com/products/item-\#(n % 977)?utm_source=email","# +
            #""email":"person\#(n % 5000)@example.com","device":"mobile","country":"GB","referrer":"https://www.example.org/newsletter/2026/11/wk48"},"brand":"ACME","source":"web"}"#
        return Event(
            id: id, time: Timestamp(millisecondsSinceEpoch: time), action: "email_click", timeValue: .string(String(time)),
            raw: Array(raw.utf8))
    }
}
