#if canImport(Glibc)
import Glibc
#endif
import CurlHTTP
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// Supervises the pipeline: runs it for the config in force, applies a new config on SIGHUP (only what changed),
/// and on a graceful shutdown stops polling and lets deliveries in flight finish for up to `shutdownGrace`.
public final class Relay: Service, Sendable {
    private enum Command: Sendable {
        case reload
        case shutdown
        case failed(any Error)
    }

    private let configFile: String
    private let initialConfig: RelayConfig
    private let store: StateStore
    private let time: RelayTime<ContinuousClock>
    private let environment: [String: String]
    private let logger: Logger
    private let notifier: SystemdNotifier
    private let progress: ProgressMonitor
    /// Where each reload's ``ReloadAnswer`` goes (the state directory); nil writes none.
    private let answerDirectory: String?
    private let commands: AsyncStream<Command>
    private let commandSink: AsyncStream<Command>.Continuation
    private let current = Mutex<Pipeline<ContinuousClock>?>(nil)

    /// A relay for a validated config.
    public init(
        configFile: String, config: RelayConfig, store: StateStore, time: RelayTime<ContinuousClock>, environment: [String: String],
        logger: Logger, notifier: SystemdNotifier, progress: ProgressMonitor, answerDirectory: String? = nil
    ) {
        self.configFile = configFile
        self.initialConfig = config
        self.store = store
        self.time = time
        self.environment = environment
        self.logger = logger
        self.notifier = notifier
        self.progress = progress
        self.answerDirectory = answerDirectory
        (commands, commandSink) = AsyncStream.makeStream(of: Command.self)
    }

    /// The pipeline running, once ``run()`` has started it.
    public var pipeline: Pipeline<ContinuousClock>? { current.withLock { $0 } }

    /// Reads the config again and applies it if valid (what SIGHUP does).
    public func reload() { commandSink.yield(.reload) }

    /// Runs until a graceful shutdown; throws ``StoreError`` when the state store fails (exit 74).
    public func run() async throws {
        let http = CurlHTTPClient(configuration: .init(userAgent: "intilery-relay/\(RelayVersion.current)"))
        do {
            try await supervise(http: http)
        } catch {
            await http.shutdown()
            throw error
        }
        await http.shutdown()
        logger.info("stopped")
    }

    private func supervise(http: CurlHTTPClient) async throws {
        // Registered before READY=1: a SIGHUP that `systemctl reload` sends right after the start must find the
        // handler, not the ignored disposition `run` sets first.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { [commandSink] in
                    for await _ in hangups { commandSink.yield(.reload) }
                }
                var config = initialConfig
                try await registerSubscriptions(config)
                let pipeline = Pipeline(
                    config: config, store: store, http: http, limiters: APIRateLimiters(clock: time.clock), time: time,
                    logger: logger, progress: progress)
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
                    "started", metadata: ["version": "\(RelayVersion.current)", "sources": .stringConvertible(config.sources.count),
                                          "subscriptions": .stringConvertible(config.subscriptions.count)])
                notifier.ready(status: config.summary)

                for await command in commands {
                    switch command {
                    case .failed(let error):
                        throw error
                    case .shutdown:
                        logger.info("stopping: polling stopped, letting deliveries in flight finish", metadata: ["grace_s": .stringConvertible(LogSeconds(config.shutdownGrace))])
                        notifier.stopping(within: config.shutdownGrace + SystemdNotifier.stopMargin)
                        pipeline.stop()
                        if let error = await finished.wait() { throw error }
                        group.cancelAll()
                        return
                    case .reload:
                        let startedAt = MonotonicClock.nanoseconds()
                        notifier.reloading()
                        switch loadConfig() {
                        case .success(let next):
                            // Recorded first, so that a new subscription that backfills is never fed by the
                            // shared poll before it has its own place.
                            try await registerSubscriptions(next)
                            let needsRestart = apply(next, over: config, to: pipeline)
                            config = next
                            answer(ReloadAnswer(pid: getpid(), startedAt: startedAt, outcome: .applied, needsRestart: needsRestart))
                        case .failure(let error):
                            answer(ReloadAnswer(pid: getpid(), startedAt: startedAt, outcome: .rejected, problems: error.lines))
                        }
                        notifier.ready(status: config.summary)
                    }
                }
            }
        } onGracefulShutdown: { [commandSink] in
            commandSink.yield(.shutdown)
        }
    }

    /// Applies `next` and returns the settings it changed that wait for a restart.
    private func apply(_ next: RelayConfig, over config: RelayConfig, to pipeline: Pipeline<ContinuousClock>) -> [String] {
        let needsRestart = ConfigInForce.settingsNeedingRestart(from: config, to: next)
        for setting in needsRestart {
            logger.notice("this change takes effect at the next restart", metadata: ["setting": "\(setting)"])
        }
        let changes = pipeline.apply(next)
        logger.notice(
            "reloaded", metadata: [
                "started": "\(changes.started.joined(separator: ", "))",
                "restarted": "\(changes.restarted.joined(separator: ", "))",
                "stopped": "\(changes.stopped.joined(separator: ", "))",
                "unchanged": .stringConvertible(changes.unchanged.count),
            ])
        return needsRestart
    }

    /// For `intilery-relay reload` (``ConfigInForce/answer(_:in:logger:)``).
    private func answer(_ answer: ReloadAnswer) {
        ConfigInForce.answer(answer, in: answerDirectory, logger: logger)
    }

    /// Records the config's subscriptions in the store (``ConfigInForce/record(_:cursors:orphans:now:logger:)``).
    private func registerSubscriptions(_ config: RelayConfig) async throws {
        try await ConfigInForce.record(config, cursors: store, orphans: store, now: time.now(), logger: logger)
    }

    /// The new config, or its problems (logged) when it is invalid: the running one stays.
    private func loadConfig() -> Result<RelayConfig, ConfigError> {
        ConfigInForce.reload(file: configFile, environment: environment, logger: logger)
    }
}

extension RelayConfig {
    /// "1 source, 3 subscriptions": systemd's STATUS and the start-up line.
    public var summary: String {
        "\(sources.count) source\(sources.count == 1 ? "" : "s"), \(subscriptions.count) subscription\(subscriptions.count == 1 ? "" : "s")"
    }
}
