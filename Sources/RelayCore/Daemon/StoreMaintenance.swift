import AsyncAlgorithms
import Logging
import ServiceLifecycle

/// Every 10 s: refreshes systemd's STATUS, prunes dead letters past their retention,
/// deletes what removed subscriptions left once `orphanRetention` has passed, and gives freed heap memory back once
/// deliveries stop (``HeapTrim``).
public struct StoreMaintenance: Service {
    let store: StateStore
    /// The config in force, once the pipeline runs.
    let config: @Sendable () -> RelayConfig?
    let notifier: SystemdNotifier
    let now: @Sendable () -> Timestamp
    let logger: Logger
    /// Writes the counts of log lines held back (``RelayLogHandler/writeSuppressedSummaries()``).
    let flushLogs: @Sendable () -> Void

    public init(
        store: StateStore, config: @escaping @Sendable () -> RelayConfig?, notifier: SystemdNotifier,
        now: @escaping @Sendable () -> Timestamp, logger: Logger, flushLogs: @escaping @Sendable () -> Void = {}
    ) {
        self.flushLogs = flushLogs
        self.store = store
        self.config = config
        self.notifier = notifier
        self.now = now
        self.logger = logger
    }

    public func run() async throws {
        var heap = HeapTrim()
        try await pass(&heap)
        for await _ in AsyncTimerSequence(interval: .seconds(10), clock: .continuous).cancelOnGracefulShutdown() {
            flushLogs()
            try await pass(&heap)
        }
        flushLogs()
    }

    private func pass(_ heap: inout HeapTrim) async throws {
        guard let config = config() else { return }
        let time = now()
        do {
            // The queue gauges are read when /metrics is scraped (SubscriptionMetrics.refreshQueueGauges).
            let status = try await store.status(sources: [], subscriptions: config.subscriptions.map(\.name))
            let pending = status.subscriptions.map(\.pending).reduce(0, +)
            let delivered = status.subscriptions.map(\.delivered).reduce(0, +)
            let dead = status.subscriptions.map(\.deadLetters).reduce(0, +)
            notifier.status("\(config.summary); \(delivered) delivered, \(pending) pending, \(dead) dead letters")
            if heap.shouldTrim(delivered: delivered, pending: pending) { HeapTrim.trim() }
            let pruned = try await store.pruneDeadLetters(before: time.advanced(by: .zero - config.deadLetters.retention))
            if pruned > 0 { logger.info("pruned dead letters past retention", metadata: ["count": .stringConvertible(pruned)]) }
            for name in try await store.pruneOrphans(olderThan: config.orphanRetention, now: time) {
                logger.notice("deleted the queued events and dead letters of a removed subscription: orphanRetention passed", metadata: ["subscription": "\(name)"])
            }
        } catch {
            if error.isCancellation { return }
            throw error
        }
    }
}
