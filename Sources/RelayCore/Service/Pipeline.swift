import CurlHTTP
import Logging

/// One configuration at work: a poller per source, a dispatcher per subscription and the outcome writer. A reload
/// stops one pipeline and starts the next; the queue lives in the store, so nothing is lost between them.
public final class Pipeline<C: Clock>: Sendable where C.Duration == Duration, C: Sendable {
    /// The configuration it runs.
    public let config: RelayConfig
    /// The pollers, one per source.
    public let pollers: [Poller<C>]
    /// The dispatchers, by subscription name.
    public let dispatchers: [String: Dispatcher<C>]
    /// Commits delivery outcomes.
    public let writer: OutcomeWriter
    private let pollStop = StopSignal()
    private let deliveryStop = StopSignal()
    private let hardStop = StopSignal()
    private let writerStop = StopSignal()
    private let clock: C

    /// Builds every part; nothing runs until ``run()``.
    public init(
        config: RelayConfig, store: StateStore, http: CurlHTTPClient, limiters: APIRateLimiters<C>, clock: C,
        now: @escaping @Sendable () -> Timestamp, logger: Logger
    ) {
        self.config = config
        self.clock = clock
        let writer = OutcomeWriter(store: store)
        self.writer = writer
        var breakers: [String: CircuitBreaker] = [:]
        var dispatchers: [String: Dispatcher<C>] = [:]
        for subscription in config.subscriptions {
            let breaker = breakers[subscription.webhook.url] ?? CircuitBreaker()
            breakers[subscription.webhook.url] = breaker
            dispatchers[subscription.name] = Dispatcher(
                subscription: subscription, store: store, http: http, writer: writer, breaker: breaker, clock: clock, now: now,
                logger: logger)
        }
        self.dispatchers = dispatchers
        pollers = config.sources.map { source in
            let subscriptions = config.subscriptions(of: source)
            let client = EventsAPIClient(
                source: source, subscriptions: subscriptions, http: http, limiter: limiters.limiter(for: source), now: now)
            let poller = Poller(
                source: source, subscriptions: subscriptions, store: store, client: client, clock: clock, now: now, logger: logger)
            let wake = subscriptions.compactMap { dispatchers[$0.name]?.wakeup }
            poller.onQueued { for signal in wake { signal.signal() } }
            return poller
        }
    }

    /// Runs until ``stop(grace:)`` has finished its work, or a part fails (only the state store can make one fail).
    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { outer in
            outer.addTask { [writer, writerStop] in
                _ = try await Self.ignoringCancellation { try await writerStop.cancelling { try await writer.run() } }
            }
            // The shutdown grace: from the stop, in-flight requests have this long before they are cut short.
            outer.addTask { [deliveryStop, hardStop, writerStop, clock, grace = config.shutdownGrace] in
                await deliveryStop.wait()
                _ = try? await writerStop.cancelling { try await clock.sleep(for: grace) }
                hardStop.fire()
            }
            try await withThrowingTaskGroup(of: Void.self) { parts in
                for poller in pollers {
                    parts.addTask { [pollStop] in
                        _ = try await Self.ignoringCancellation { try await pollStop.cancelling { try await poller.run() } }
                    }
                }
                for dispatcher in dispatchers.values {
                    parts.addTask { [hardStop, deliveryStop] in
                        _ = try await Self.ignoringCancellation {
                            try await hardStop.cancelling { try await dispatcher.run(stop: deliveryStop) }
                        }
                    }
                }
                // next(), not waitForAll(): the latter waits for every part before rethrowing, and a failing store
                // must stop the pipeline while the other parts are still running.
                while try await parts.next() != nil {}
            }
            writerStop.fire()
            deliveryStop.fire()
            try await outer.waitForAll()
            try await writer.flush()
        }
    }

    /// Stops polling at once and starting deliveries; requests in flight may finish for up to `shutdownGrace`,
    /// then are cut short (their rows stay queued). Returns at once; ``run()`` returns when all is done.
    public func stop() {
        pollStop.fire()
        deliveryStop.fire()
    }

    /// Whether every source has polled successfully within three poll intervals of `now` (`/readyz`).
    public func isReady(now: Timestamp) -> Bool {
        pollers.allSatisfy { poller in
            guard let last = poller.health.snapshot.lastSuccessAt else { return false }
            let window = poller.sourceConfig.pollInterval * 3 + .seconds(30)
            return now <= last.advanced(by: window)
        }
    }

    /// Runs `body`, treating a cancellation (from a stop) as a normal end.
    static func ignoringCancellation<T>(_ body: () async throws -> T) async throws -> T? {
        do {
            return try await body()
        } catch let error as StoreError where error.isCancellation {
            return nil
        } catch is CancellationError {
            return nil
        }
    }
}
