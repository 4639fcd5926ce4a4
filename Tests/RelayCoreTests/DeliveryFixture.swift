import CurlHTTP
import Foundation
import IntilerySimulator
import Logging
import RelayCore
import RelayJSON
import Testing

/// A receiver, a real state store and dispatchers on one test clock (the receiver reads the same time).
final class DeliveryFixture: Sendable {
    let clock: TestClock
    let receiver: WebhookReceiver
    let store: StateStore
    let http = CurlHTTPClient()
    let writer: OutcomeWriter
    let directory: URL
    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    var now: Timestamp { clock.wallTime }

    init(autoAdvance: Bool = true) async throws {
        let clock = TestClock(autoAdvance: autoAdvance)
        self.clock = clock
        receiver = try await WebhookReceiver.start(time: .derived { clock.wallMilliseconds })
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("relay-delivery-\(UUID().uuidString)")
        store = try StateStore.open(directory: directory.path)
        writer = OutcomeWriter(store: store)
    }

    func shutdown() async throws {
        await http.shutdown()
        try await receiver.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }

    func subscription(_ name: String, configure: (inout WebhookConfig) -> Void = { _ in }) -> SubscriptionConfig {
        var webhook = WebhookConfig(url: receiver.url("/hooks/\(name)"))
        webhook.timeout = .seconds(5)
        configure(&webhook)
        return SubscriptionConfig(name: name, source: "acme", webhook: webhook)
    }

    func dispatcher(_ subscription: SubscriptionConfig, breaker: CircuitBreaker = CircuitBreaker()) -> Dispatcher<TestClock> {
        let clock = self.clock
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return Dispatcher(
            subscription: subscription, store: store, http: http, writer: writer, breaker: breaker, time: clock.relayTime,
            logger: logger)
    }

    /// Queues `count` events for the subscriptions, one millisecond apart, as the poller would.
    @discardableResult
    func enqueue(_ count: Int, for subscriptions: [String], startingAt first: Int = 0) async throws -> [String] {
        try await enqueueResult(count, for: subscriptions, startingAt: first).ids
    }

    /// ``enqueue(_:for:startingAt:)``, with what the store's commit returned (what it hands to dispatchers).
    func enqueueResult(_ count: Int, for subscriptions: [String], startingAt first: Int = 0) async throws -> (ids: [String], result: EnqueueResult) {
        var routed: [RoutedEvent] = []
        for n in first..<first + count {
            let time = ingestEpoch - 100_000 + Int64(n)
            let raw = #"{"eventID":"evt-\#(n)","timestamp":"\#(Timestamp(millisecondsSinceEpoch: time).iso8601)","action":"email_click","properties":{"n":\#(n),"note":"caf\u00e9"}}"#
            routed.append(RoutedEvent(
                event: Event(id: "evt-\(n)", time: Timestamp(millisecondsSinceEpoch: time), action: "email_click",
                             timeValue: .string(Timestamp(millisecondsSinceEpoch: time).iso8601), raw: Array(raw.utf8)),
                subscriptions: subscriptions))
        }
        let result = try await store.enqueue(source: "acme", events: routed, cursor: now, now: now)
        return (routed.map(\.event.id), result)
    }

    /// The `eventID` of each request the receiver got at `/hooks/<name>`, in order.
    func eventIDs(sentTo name: String) -> [String] {
        receiver.record.requests(to: "/hooks/\(name)").compactMap {
            (try? JSONParser.parse($0.body))?.objectValue?["eventID"]?.stringValue
        }
    }

    /// Runs the dispatchers and the writer until `done` holds for the store, then stops them.
    func deliver(_ dispatchers: [Dispatcher<TestClock>], until done: @escaping @Sendable (StateStore) async throws -> Bool) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.writer.run() }
            for dispatcher in dispatchers { group.addTask { try await dispatcher.run() } }
            while try await !done(store) {
                await writer.committed.wait()
            }
            group.cancelAll()
        }
        try await writer.flush()
    }

    func pending(_ subscription: String) async throws -> Int {
        try await store.status(sources: [], subscriptions: [subscription]).subscriptions[0].pending
    }
}

func withDelivery<T>(autoAdvance: Bool = true, _ body: (DeliveryFixture) async throws -> T) async throws -> T {
    let fixture = try await DeliveryFixture(autoAdvance: autoAdvance)
    do {
        let result = try await body(fixture)
        try await fixture.shutdown()
        return result
    } catch {
        try await fixture.shutdown()
        throw error
    }
}
