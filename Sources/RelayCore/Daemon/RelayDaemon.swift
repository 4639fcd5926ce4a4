import Logging
import ServiceLifecycle

/// The daemon as the services of one `ServiceGroup`. A graceful shutdown stops them in reverse order: the pipeline
/// supervisor drains first while the watchdog keeps pinging and `/metrics` keeps answering; maintenance and the
/// metrics endpoint stop last.
public struct RelayDaemon: Sendable {
    /// The pipeline supervisor, which reloads on SIGHUP.
    public let relay: Relay
    /// The metrics endpoint, when the config has one.
    public let metrics: MetricsEndpoint?
    /// In start order; the supervisor's end (a graceful stop done) ends the group.
    public let services: [ServiceGroupConfiguration.ServiceConfiguration]

    /// Opens the state store and binds the metrics endpoint; nothing polls or delivers until the group runs.
    /// Throws ``StoreError`` for the store, ``RelayStartError`` for the listener.
    public static func start(
        configFile: String, config: RelayConfig, stateDirectory: String, environment: [String: String], logger: Logger,
        notifier: SystemdNotifier, renderMetrics: @escaping @Sendable () -> [UInt8], flushLogs: @escaping @Sendable () -> Void = {}
    ) async throws -> RelayDaemon {
        let store = try StateStore.open(directory: stateDirectory)
        // An answer left by an earlier run (another boot's CLOCK_MONOTONIC, perhaps the same pid) must not pass
        // for the answer to a reload of this one.
        ReloadAnswer.remove(directory: stateDirectory)
        let time = RelayTime.system
        let progress = ProgressMonitor()
        let relay = Relay(
            configFile: configFile, config: config, store: store, time: time, environment: environment, logger: logger,
            notifier: notifier, progress: progress, answerDirectory: stateDirectory)
        logger.info("state store open", metadata: ["state": "\(stateDirectory)"])
        let refresh = ScrapeRefresh()
        let render: @Sendable () async -> [UInt8] = {
            if let pipeline = relay.pipeline {
                await refresh.refresh {
                    try await SubscriptionMetrics.refreshQueueGauges(
                        store: store, subscriptions: pipeline.config.subscriptions.map(\.name), now: time.now(),
                        stillCurrent: { name in relay.pipeline?.config.subscriptions.contains { $0.name == name } ?? false })
                }
                SubscriptionMetrics.refreshInFlight(pipeline.dispatchers)
            }
            return MetricsPage.render(registry: renderMetrics())
        }
        let metrics = try await config.metrics.listen.asyncMap { listen in
            try await MetricsEndpoint.start(
                listen: listen, render: render, isReady: { relay.pipeline?.isReady(now: time.now()) ?? false }, logger: logger)
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let metrics { services.append(.init(service: metrics)) }
        services.append(.init(service: StoreMaintenance(
            store: store, config: { relay.pipeline?.config }, notifier: notifier, now: time.now, logger: logger, flushLogs: flushLogs)))
        if let interval = SystemdNotifier.watchdogInterval(environment: environment) {
            services.append(.init(service: Watchdog(interval: interval, progress: progress, notifier: notifier, logger: logger)))
        }
        services.append(.init(service: relay, successTerminationBehavior: .gracefullyShutdownGroup))
        return RelayDaemon(relay: relay, metrics: metrics, services: services)
    }
}

extension Optional {
    fileprivate func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let self else { return nil }
        return try await transform(self)
    }
}
