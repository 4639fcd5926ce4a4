import CurlHTTP
import Logging
import Synchronization

/// The running relay for its config: a poller per source, a dispatcher per subscription and one outcome writer.
///
/// A reload (``apply(_:)``) changes only what changed: a poller whose source and routing are the same, and a
/// dispatcher whose subscription is the same, keep running untouched. A changed part stops as at a shutdown (in
/// flight requests may finish for up to `shutdownGrace`) and its successor starts once it has ended, so that no
/// row is sent by both. The queue lives in the store, so nothing is lost in between.
public final class Pipeline<C: Clock>: Sendable where C.Duration == Duration, C: Sendable {
    /// A poller and the subscriptions whose routing it was built with.
    private struct PollerPart {
        var poller: Poller<C>
        var source: SourceConfig
        var routing: [SubscriptionConfig]
        var part: RunningPart
    }

    private struct DispatcherPart {
        var dispatcher: Dispatcher<C>
        var subscription: SubscriptionConfig
        var part: RunningPart
    }

    private struct Parts {
        var config: RelayConfig
        var pollers: [String: PollerPart] = [:]
        var dispatchers: [String: DispatcherPart] = [:]
        /// Per webhook URL, kept across reloads: a URL's breaker and flow control outlive its subscriptions.
        var breakers: [String: CircuitBreaker] = [:]
        var flows: [String: FlowControl] = [:]
        var stopping = false
    }

    private enum Command: Sendable {
        /// Run `body` as a part once `after` (its predecessor) has ended.
        case start(RunningPart, after: RunningPart?, body: @Sendable () async throws -> Void)
        case failed(any Error)
        /// Every part has been told to stop: wait for them and end.
        case finish
    }

    /// Commits delivery outcomes, for every part, across reloads.
    public let writer: OutcomeWriter
    private let store: StateStore
    private let http: CurlHTTPClient
    private let limiters: APIRateLimiters<C>
    private let time: RelayTime<C>
    private let logger: Logger
    private let parts: Mutex<Parts>
    private let commands: AsyncStream<Command>
    private let commandSink: AsyncStream<Command>.Continuation
    private let writerStop = StopSignal()
    /// Every store step of every part, for the watchdog.
    public let progress: ProgressMonitor

    /// Builds every part of `config`; nothing runs until ``run()``.
    public init(
        config: RelayConfig, store: StateStore, http: CurlHTTPClient, limiters: APIRateLimiters<C>, time: RelayTime<C>,
        logger: Logger, progress: ProgressMonitor = ProgressMonitor()
    ) {
        self.progress = progress
        self.store = store
        self.http = http
        self.limiters = limiters
        self.time = time
        self.logger = logger
        writer = OutcomeWriter(store: store, progress: progress)
        parts = Mutex(Parts(config: config))
        (commands, commandSink) = AsyncStream.makeStream(of: Command.self)
        apply(config)
    }

    /// The configuration in force.
    public var config: RelayConfig { parts.withLock { $0.config } }
    /// The pollers, one per source.
    public var pollers: [Poller<C>] { parts.withLock { $0.pollers.values.map(\.poller) } }
    /// The dispatchers, by subscription name.
    public var dispatchers: [String: Dispatcher<C>] { parts.withLock { $0.dispatchers.mapValues(\.dispatcher) } }

    /// Makes `config` the one in force, changing only the parts it changes. Returns at once: stopped parts end in
    /// the background, and a changed part's successor starts when its predecessor has ended.
    @discardableResult
    public func apply(_ config: RelayConfig) -> PipelineChanges {
        var changes = PipelineChanges()
        parts.withLock { parts in
            guard !parts.stopping else { return }
            let grace = config.shutdownGrace
            parts.config = config
            // Dispatchers first, so that pollers can wake the current ones.
            var previousDispatchers = parts.dispatchers
            parts.dispatchers = [:]
            for subscription in config.subscriptions {
                let old = previousDispatchers.removeValue(forKey: subscription.name)
                if let old, old.subscription == subscription {
                    parts.dispatchers[subscription.name] = old
                    changes.unchanged.append("subscription \(subscription.name)")
                    continue
                }
                if let old { stop(old.part, grace: grace) }
                let url = subscription.webhook.url
                let breaker = parts.breakers[url] ?? CircuitBreaker()
                let flow = parts.flows[url] ?? FlowControl()
                parts.breakers[url] = breaker
                parts.flows[url] = flow
                let dispatcher = Dispatcher(
                    subscription: subscription, store: store, http: http, writer: writer, breaker: breaker, flow: flow,
                    time: time, logger: logger, progress: progress)
                let part = RunningPart()
                parts.dispatchers[subscription.name] = DispatcherPart(dispatcher: dispatcher, subscription: subscription, part: part)
                commandSink.yield(.start(part, after: old?.part) { [part] in
                    _ = try await Self.ignoringCancellation {
                        try await part.hard.cancelling { try await dispatcher.run(stop: part.gentle) }
                    }
                })
                changes.record(new: old == nil, "subscription \(subscription.name)")
            }
            for (name, old) in previousDispatchers {
                stop(old.part, grace: grace)
                changes.stopped.append("subscription \(name)")
                // Once it has ended, unless a later reload brought the name back.
                commandSink.yield(.start(RunningPart(), after: old.part) { [weak self] in
                    guard let self, !self.config.subscriptions.contains(where: { $0.name == name }) else { return }
                    SubscriptionMetrics.remove(subscription: name)
                })
            }

            var previousPollers = parts.pollers
            parts.pollers = [:]
            for source in config.sources {
                let routing = config.subscriptions(of: source).map(Self.routing)
                let old = previousPollers.removeValue(forKey: source.name)
                if let old, old.source == source, old.routing == routing {
                    old.poller.update(config.subscriptions(of: source))
                    parts.pollers[source.name] = old
                    changes.unchanged.append("source \(source.name)")
                    continue
                }
                if let old { stop(old.part, grace: grace) }
                let subscriptions = config.subscriptions(of: source)
                let client = EventsAPIClient(
                    source: source, subscriptions: subscriptions, http: http, limiter: limiters.limiter(for: source), now: time.now)
                let poller = Poller(
                    source: source, subscriptions: subscriptions, store: store, client: client, time: time, logger: logger,
                    progress: progress)
                let names = subscriptions.map(\.name)
                // Looked up at each commit: a dispatcher restarted by a later reload is the one woken.
                poller.onQueued { [weak self] queued in self?.wake(names, handingOff: queued) }
                let part = RunningPart()
                parts.pollers[source.name] = PollerPart(poller: poller, source: source, routing: routing, part: part)
                commandSink.yield(.start(part, after: old?.part) { [part] in
                    _ = try await Self.ignoringCancellation { try await part.gentle.cancelling { try await poller.run() } }
                })
                changes.record(new: old == nil, "source \(source.name)")
            }
            for (name, old) in previousPollers {
                stop(old.part, grace: grace)
                changes.stopped.append("source \(name)")
                // A frozen lag would keep an alert on a source that is gone firing for ever.
                commandSink.yield(.start(RunningPart(), after: old.part) { [weak self] in
                    guard let self, !self.config.sources.contains(where: { $0.name == name }) else { return }
                    SourceMetrics.remove(source: name)
                })
            }
        }
        return changes
    }

    /// Runs until ``stop()`` has finished its work, or a part fails (only the state store can make one fail).
    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { outer in
            outer.addTask { [writer, writerStop] in try await writer.run(until: writerStop) }
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    loop: for await command in commands {
                        switch command {
                        case .start(let part, let after, let body):
                            group.addTask { [commandSink] in
                                if let after { _ = await after.done.wait() }
                                do {
                                    try await body()
                                    part.done.finish(nil)
                                } catch {
                                    part.done.finish(error)
                                    commandSink.yield(.failed(error))
                                }
                            }
                        case .failed(let error):
                            throw error
                        case .finish:
                            break loop
                        }
                    }
                    while try await group.next() != nil {}
                }
            } catch {
                writerStop.fire()
                throw error
            }
            writerStop.fire()
            try await outer.waitForAll()
        }
        try await writer.flush()
    }

    /// Stops polling at once and starting deliveries; requests in flight may finish for up to `shutdownGrace`,
    /// then are cut short (their rows stay queued). Returns at once; ``run()`` returns when all is done.
    public func stop() {
        let all = parts.withLock { parts -> [RunningPart] in
            guard !parts.stopping else { return [] }
            parts.stopping = true
            return parts.pollers.values.map(\.part) + parts.dispatchers.values.map(\.part)
        }
        let grace = config.shutdownGrace
        for part in all { stop(part, grace: grace) }
        commandSink.yield(.finish)
    }

    /// Tells a part to stop: start nothing new now, cut what is in flight short after `grace`. The timer is a part
    /// of its own, which ends as soon as the stopped part does.
    private func stop(_ part: RunningPart, grace: Duration) {
        part.gentle.fire()
        let timer = RunningPart()
        commandSink.yield(.start(timer, after: nil) { [time] in
            _ = try? await part.done.ended.cancelling { try await time.sleep(for: grace) }
            part.hard.fire()
        })
    }

    private func wake(_ names: [String], handingOff queued: [String: [Delivery]]) {
        let dispatchers = parts.withLock { parts in names.compactMap { parts.dispatchers[$0]?.dispatcher } }
        for dispatcher in dispatchers {
            if let rows = queued[dispatcher.name], !rows.isEmpty { dispatcher.handOff(rows) }
            dispatcher.wakeup.signal()
        }
    }

    /// What of a subscription its poller routes by: a change of webhook alone leaves polling alone.
    private static func routing(_ subscription: SubscriptionConfig) -> SubscriptionConfig {
        var routing = subscription
        routing.webhook = WebhookConfig(url: "")
        return routing
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

/// One poller or dispatcher at work, and the two ways to stop it: `gentle` (stop polling; start no new request)
/// and `hard` (cut requests in flight short, after the grace).
final class RunningPart: Sendable {
    let gentle = StopSignal()
    let hard = StopSignal()
    let done = PartCompletion()
}

/// Lets one task wait for a part's end while the task group keeps running others.
final class PartCompletion: Sendable {
    /// Fires when the part has ended.
    let ended = StopSignal()
    private let error = Mutex<(any Error)?>(nil)

    func finish(_ error: (any Error)?) {
        self.error.withLock { $0 = error }
        ended.fire()
    }

    /// The part's error, once it has ended (or nil at once when the waiting task is cancelled).
    func wait() async -> (any Error)? {
        await ended.wait()
        return error.withLock { $0 }
    }
}

/// What a reload changed, by part (`source NAME`, `subscription NAME`), for the log.
public struct PipelineChanges: Sendable, Equatable {
    public var started: [String] = []
    public var restarted: [String] = []
    public var stopped: [String] = []
    public var unchanged: [String] = []

    mutating func record(new: Bool, _ part: String) {
        if new { started.append(part) } else { restarted.append(part) }
    }
}
