import CurlHTTP
import Foundation
import HTTPServer
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The daemon: opens the store, runs the pipeline for the current config, serves metrics, talks to systemd, and
/// reloads on SIGHUP. A `Service` for swift-service-lifecycle, which turns SIGTERM/SIGINT into a graceful stop.
public final class Relay: Service, Sendable {
    private enum Command: Sendable {
        case reload
        case shutdown
        case failed(any Error)
    }

    private let configFile: String
    private let initialConfig: RelayConfig
    private let stateDirectory: String
    private let environment: [String: String]
    private let logger: Logger
    private let notifier: SystemdNotifier
    private let renderMetrics: @Sendable () -> [UInt8]
    private let commands: AsyncStream<Command>
    private let commandSink: AsyncStream<Command>.Continuation
    private let current = Mutex<Pipeline<ContinuousClock>?>(nil)
    /// Called with the metrics endpoint's port once bound (tests bind port 0).
    private let onListening: @Sendable (Int) -> Void

    /// A relay for a validated config.
    public init(
        configFile: String, config: RelayConfig, stateDirectory: String, environment: [String: String], logger: Logger,
        notifier: SystemdNotifier, renderMetrics: @escaping @Sendable () -> [UInt8], onListening: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.configFile = configFile
        self.initialConfig = config
        self.stateDirectory = stateDirectory
        self.environment = environment
        self.logger = logger
        self.notifier = notifier
        self.renderMetrics = renderMetrics
        self.onListening = onListening
        (commands, commandSink) = AsyncStream.makeStream(of: Command.self)
    }

    /// Reads the config again and applies it if valid (what SIGHUP does).
    public func reload() { commandSink.yield(.reload) }

    /// Runs until a graceful shutdown; throws ``StoreError`` when the state store fails (exit 74).
    public func run() async throws {
        let store = try StateStore.open(directory: stateDirectory)
        let http = CurlHTTPClient(configuration: .init(userAgent: "intilery-relay/\(RelayVersion.current)"))
        let time = RelayTime.system
        let limiters = APIRateLimiters(clock: time.clock)
        let now = time.now
        let metricsServer: HTTPServer?
        do {
            metricsServer = try await startMetricsServer(initialConfig, now: now)
            try await runPipelines(store: store, http: http, limiters: limiters, time: time)
        } catch {
            await http.shutdown()
            throw error
        }
        await http.shutdown()
        try await metricsServer?.shutdown()
        logger.info("stopped")
    }

    private func runPipelines(
        store: StateStore, http: CurlHTTPClient, limiters: APIRateLimiters<ContinuousClock>, time: RelayTime<ContinuousClock>
    ) async throws {
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { [commandSink] in
                    for await _ in await UnixSignalsSequence(trapping: .sighup) { commandSink.yield(.reload) }
                }
                let progress = ProgressMonitor()
                if let interval = SystemdNotifier.watchdogInterval(environment: environment) {
                    group.addTask { [notifier, logger] in
                        // Pings only while nothing is stuck in a store step: a relay that no longer moves is restarted.
                        var withheld = false
                        while !Task.isCancelled {
                            if let stuck = progress.stuck(longerThan: interval).first {
                                if !withheld {
                                    logger.critical(
                                        "not pinging the watchdog: a part is stuck; systemd will restart the relay",
                                        metadata: ["part": "\(stuck.part)", "stuck_s": "\(stuck.running / .seconds(1))"])
                                }
                                withheld = true
                            } else {
                                withheld = false
                                notifier.watchdog()
                            }
                            try await Task.sleep(for: interval / 2)
                        }
                    }
                }
                group.addTask { try await self.maintain(store: store, now: time.now) }

                var config = initialConfig
                let pipeline = Pipeline(
                    config: config, store: store, http: http, limiters: limiters, time: time, logger: logger,
                    progress: progress)
                current.withLock { $0 = pipeline }
                let finished = PartCompletion()
                group.addTask { [commandSink] in
                    do {
                        try await pipeline.run()
                        finished.finish(nil)
                    } catch {
                        finished.finish(error)
                        commandSink.yield(.failed(error))
                    }
                }
                logger.info(
                    "started", metadata: ["version": "\(RelayVersion.current)", "sources": "\(config.sources.count)",
                                          "subscriptions": "\(config.subscriptions.count)", "state": "\(stateDirectory)"])
                notifier.ready(status: summary(config))

                for await command in commands {
                    switch command {
                    case .failed(let error):
                        throw error
                    case .shutdown:
                        logger.info("stopping: polling stopped, letting deliveries in flight finish", metadata: ["grace": "\(DurationText.format(config.shutdownGrace))"])
                        notifier.stopping()
                        pipeline.stop()
                        if let error = await finished.wait() { throw error }
                        group.cancelAll()
                        return
                    case .reload:
                        notifier.reloading()
                        guard let next = loadConfig() else {
                            notifier.ready(status: summary(config))
                            continue
                        }
                        for setting in Self.settingsNeedingRestart(from: config, to: next) {
                            logger.notice("this change takes effect at the next restart", metadata: ["setting": "\(setting)"])
                        }
                        let changes = pipeline.apply(next)
                        config = next
                        logger.notice(
                            "reloaded", metadata: [
                                "started": "\(changes.started.joined(separator: ", "))",
                                "restarted": "\(changes.restarted.joined(separator: ", "))",
                                "stopped": "\(changes.stopped.joined(separator: ", "))",
                                "unchanged": "\(changes.unchanged.count)",
                            ])
                        notifier.ready(status: summary(config))
                    }
                }
            }
        } onGracefulShutdown: { [commandSink] in
            commandSink.yield(.shutdown)
        }
    }

    /// Settings a running daemon cannot change: the metrics listener is bound and the state directory open.
    /// Everything else applies at a reload.
    static func settingsNeedingRestart(from old: RelayConfig, to new: RelayConfig) -> [String] {
        var settings: [String] = []
        if old.metrics != new.metrics { settings.append("metrics.listen") }
        if old.stateDirectory != new.stateDirectory { settings.append("stateDirectory") }
        return settings
    }

    /// The new config, or nil (logged) when it is invalid: the running one stays.
    private func loadConfig() -> RelayConfig? {
        do {
            let config = try ConfigLoader.load(file: configFile, environment: ConfigEnvironment(variables: environment))
            return config
        } catch {
            logger.error("reload rejected: the config has problems; the running config stays", metadata: ["problems": "\(error.problems.count)"])
            for line in error.lines { logger.error("\(line)") }
            return nil
        }
    }

    /// Refreshes queue gauges and systemd's STATUS, and prunes old dead letters, every 10 s.
    private func maintain(store: StateStore, now: @escaping @Sendable () -> Timestamp) async throws {
        while !Task.isCancelled {
            if let pipeline = current.withLock({ $0 }) {
                let config = pipeline.config
                let time = now()
                do {
                    let status = try await store.status(sources: [], subscriptions: config.subscriptions.map(\.name))
                    for subscription in status.subscriptions {
                        let age = subscription.oldestPendingEventTime.map { Double(time.millisecondsSinceEpoch - $0.millisecondsSinceEpoch) / 1000 } ?? 0
                        SubscriptionMetrics(subscription: subscription.name).queue(
                            pending: subscription.pending, oldestAgeSeconds: age, deadLetters: subscription.deadLetters)
                    }
                    let pending = status.subscriptions.map(\.pending).reduce(0, +)
                    let delivered = status.subscriptions.map(\.delivered).reduce(0, +)
                    let dead = status.subscriptions.map(\.deadLetters).reduce(0, +)
                    notifier.status("\(summary(config)); \(delivered) delivered, \(pending) pending, \(dead) dead letters")
                    let pruned = try await store.pruneDeadLetters(before: time.advanced(by: .zero - config.deadLetters.retention))
                    if pruned > 0 { logger.info("pruned dead letters past retention", metadata: ["count": "\(pruned)"]) }
                } catch {
                    if error.isCancellation { return }
                    throw error
                }
            }
            try await Task.sleep(for: .seconds(10))
        }
    }

    private func summary(_ config: RelayConfig) -> String {
        "\(config.sources.count) source\(config.sources.count == 1 ? "" : "s"), \(config.subscriptions.count) subscription\(config.subscriptions.count == 1 ? "" : "s")"
    }

    private func startMetricsServer(_ config: RelayConfig, now: @escaping @Sendable () -> Timestamp) async throws -> HTTPServer? {
        guard let listen = config.metrics.listen else { return nil }
        let render = renderMetrics
        do {
            let server = try await HTTPServer.start(HTTPServer.Configuration(host: listen.host, port: listen.port, maxRequestBodyBytes: 4096)) { [self] request in
                switch request.path {
                case "/metrics":
                    return .respond(status: 200, headers: [("content-type", "text/plain; version=0.0.4")], body: render())
                case "/healthz":
                    return .text("ok\n", status: 200)
                case "/readyz":
                    let ready = self.current.withLock { $0 }?.isReady(now: now()) ?? false
                    return ready ? .text("ready\n", status: 200) : .text("not ready: a source has not polled successfully lately\n", status: 503)
                default:
                    return .text("not found\n", status: 404)
                }
            }
            logger.info("metrics listening", metadata: ["address": "\(listen.host):\(server.port)"])
            onListening(server.port)
            return server
        } catch {
            throw RelayStartError(description: "cannot listen on \(listen) for metrics: \(error)")
        }
    }
}

/// Start-up failed for a reason other than the config or the store.
public struct RelayStartError: Error, CustomStringConvertible {
    public let description: String
}
