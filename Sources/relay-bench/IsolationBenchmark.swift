import CurlHTTP
import Foundation
import IntilerySimulator
import Logging
import RelayCore
import RelayJSON

/// How long a healthy subscription takes to deliver a backlog alone, and beside a hanging and a failing one.
struct IsolationBenchmark {
    let events: Int

    func run() async throws -> (alone: Double, withNeighbours: Double) {
        let alone = try await deliver(neighbours: false)
        let crowded = try await deliver(neighbours: true)
        return (alone, crowded)
    }

    private func deliver(neighbours: Bool) async throws -> Double {
        let receiver = try await WebhookReceiver.start()
        receiver.keep(bodies: false, requests: false)
        receiver.script("/hang", [], then: .neverAnswer)
        receiver.script("/flaky", [], then: .status(500))
        let directory = try EndToEndBenchmark.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let http = CurlHTTPClient()
        let time = RelayTime.system
        let now = time.now
        let names = neighbours ? ["healthy", "hang", "flaky"] : ["healthy"]
        var routed: [RoutedEvent] = []
        for n in 0..<events {
            let raw = Array(#"{"eventID":"e\#(n)","timestamp":"2024-05-01T00:00:00.000Z","action":"a"}"#.utf8)
            routed.append(RoutedEvent(
                event: Event(id: "e\(n)", time: Timestamp(millisecondsSinceEpoch: Int64(n)), action: "a", timeValue: .string("t"),
                             raw: raw),
                subscriptions: names))
        }
        _ = try await store.enqueue(source: "bench", events: routed, cursor: now(), now: now())
        let writer = OutcomeWriter(store: store)
        var logger = Logger(label: "bench")
        logger.logLevel = .critical
        let dispatchers = names.map { name in
            var webhook = WebhookConfig(url: receiver.url("/\(name)"))
            webhook.timeout = .seconds(30)
            return Dispatcher(
                subscription: SubscriptionConfig(name: name, source: "bench", webhook: webhook), store: store, http: http,
                writer: writer, breaker: CircuitBreaker(), time: time, logger: logger)
        }
        let seconds = try await Self.deliver(dispatchers, writer: writer, store: store, until: "healthy")
        await http.shutdown()
        try await receiver.shutdown()
        return seconds
    }

    /// Runs `dispatchers` and `writer` until `subscription` has nothing queued; returns the seconds it took.
    static func deliver(
        _ dispatchers: [Dispatcher<ContinuousClock>], writer: OutcomeWriter, store: StateStore, until subscription: String
    ) async throws -> Double {
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await writer.run() }
            for dispatcher in dispatchers { group.addTask { try await dispatcher.run() } }
            // An indexed read, not a count: counting a long queue after every commit would cost more than the drain.
            while try await store.nextDueTime(subscription: subscription) != nil {
                await writer.committed.wait()
            }
            group.cancelAll()
        }
        return started.duration(to: .now) / .seconds(1)
    }
}
