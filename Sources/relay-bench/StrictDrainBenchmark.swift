import CurlHTTP
import Foundation
import IntilerySimulator
import Logging
import RelayCore
import RelayJSON

/// A strict subscription draining a queue, one request at a time in event-time order, as after an outage: every
/// step reads the head of the line, so the read must use an index however long the queue is.
struct StrictDrainBenchmark {
    let events: Int

    /// Events per second over the drain.
    func run() async throws -> Double {
        let receiver = try await WebhookReceiver.start()
        receiver.keep(bodies: false, requests: false)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("relay-bench-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let http = CurlHTTPClient()
        let time = RelayTime.system
        let now = time.now
        var next = 0
        while next < events {
            let routed = (next..<min(next + 10_000, events)).map { n in
                RoutedEvent(
                    event: Event(
                        id: "e\(n)", time: Timestamp(millisecondsSinceEpoch: 1_714_521_600_000 + Int64(n)), action: "a",
                        timeValue: .string("t"), 
                        raw: Array(#"{"eventID":"e\#(n)","timestamp":"2024-05-01T00:00:00.000Z","action":"a"}"#.utf8)),
                    subscriptions: ["strict"])
            }
            _ = try await store.enqueue(source: "bench", events: routed, cursor: now(), now: now())
            next += routed.count
        }
        var logger = Logger(label: "bench")
        logger.logLevel = .critical
        var webhook = WebhookConfig(url: receiver.url("/strict"))
        webhook.ordering = .strict
        let writer = OutcomeWriter(store: store)
        let dispatcher = Dispatcher(
            subscription: SubscriptionConfig(name: "strict", source: "bench", webhook: webhook), store: store, http: http,
            writer: writer, breaker: CircuitBreaker(), time: time, logger: logger)
        let seconds = try await IsolationBenchmark.deliver([dispatcher], writer: writer, store: store, until: "strict")
        await http.shutdown()
        try await receiver.shutdown()
        return Double(events) / seconds
    }
}
