import ArgumentParser
import Foundation
import Logging
import Metrics
import PostgresNIO
import Prometheus
import RelayCore
import RelayPostgres
import ServiceLifecycle

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the relay in the foreground, logging to standard error.",
        discussion: """
            SIGTERM or SIGINT stops polling, lets in-flight requests finish for up to shutdownGrace, leaves the rest \
            queued and exits 0. SIGHUP reloads the config; an invalid one is logged and the old one keeps running. \
            Under systemd (Type=notify) it sends READY=1, STATUS=, WATCHDOG=1, RELOADING=1 and STOPPING=1. \
            Exit codes: 0 stopped, 78 config error, 74 state store I/O error, 75 state directory in use by another \
            run, 1 other.
            """
    )

    @OptionGroup var store: StoreOptions

    @Option(name: .long, help: "Log line format.")
    var logFormat: LogFormat = .logfmt

    @Option(name: .long, help: "The least severe level logged.")
    var logLevel: LogLevelOption = .info

    func run() async throws {
        // Every file the relay creates holds event data: owner only.
        umask(0o077)
        // Until the reload handler is in place, a SIGHUP (`intilery-relay reload` racing the start) must not end
        // the process, as SIGHUP's default would.
        signal(SIGHUP, SIG_IGN)
        let format = RelayLogHandler.Format(rawValue: logFormat.rawValue) ?? .logfmt
        let level = Logger.Level(rawValue: logLevel.rawValue) ?? .info
        // Under systemd, stderr is the journal: each line carries its priority for `journalctl -p`.
        let journal = RelayLogHandler.writesToJournal(environment: ProcessInfo.processInfo.environment)
        LoggingSystem.bootstrap { label in RelayLogHandler(label: label, format: format, level: level, syslogPriorities: journal) }
        let summaries = RelayLogHandler(label: "intilery-relay", format: format, level: level, syslogPriorities: journal)
        let logger = Logger(label: "intilery-relay")
        // Repeats held back in the last minute are counted in the log before the process goes, however it ends.
        defer { summaries.writeSuppressedSummaries(stopping: true) }

        let environment = ProcessInfo.processInfo.environment
        let config: RelayConfig
        do {
            config = try ConfigLoader.load(file: store.config, environment: ConfigEnvironment(variables: environment))
        } catch {
            for line in error.lines { printToStandardError(line) }
            throw ExitStatus.configError
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        if case .postgres(let postgres) = config.store {
            try await runOnPostgres(
                postgres, config: config, registry: registry, environment: environment, logger: logger,
                flushLogs: { summaries.writeSuppressedSummaries() })
            return
        }
        let directory = StateDirectory.resolve(flag: store.stateDirectory, config: config, environment: environment)
        let lock = try Self.lock(directory, logger: logger)

        let daemon: RelayDaemon
        do {
            daemon = try await RelayDaemon.start(
                configFile: store.config, config: config, stateDirectory: directory, environment: environment, logger: logger,
                notifier: SystemdNotifier(environment: environment), renderMetrics: { registry.emitToBuffer() },
                flushLogs: { summaries.writeSuppressedSummaries() })
        } catch let error as StoreError {
            logger.critical("cannot open the state store", metadata: ["error": "\(error)"])
            throw ExitStatus.ioError
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitStatus.failure
        }
        var groupConfiguration = ServiceGroupConfiguration(
            services: daemon.services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // A backstop only: the relay keeps its own `shutdownGrace`, which a reload may raise up to its 10-minute bound.
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(600 + 5)
        do {
            try await ServiceGroup(configuration: groupConfiguration).run()
            // Held until here: released only when the daemon is done with the state.
            lock.release()
        } catch let error as StoreError {
            logger.critical("state store failed; nothing was lost, fix it and restart", metadata: ["error": "\(error)"])
            throw ExitStatus.ioError
        } catch {
            logger.critical("stopped on an error", metadata: ["error": "\(error)"])
            throw ExitStatus.failure
        }
    }

    /// The state directory's lock: exits 75 when another run holds it (`inUse` says more), 74 when it cannot be used.
    private static func lock(_ directory: String, logger: Logger, inUse: String = "") throws -> StateDirectoryLock {
        do {
            return try StateDirectoryLock.acquire(directory: directory)
        } catch let error as StateDirectoryLock.InUse {
            printToStandardError("intilery-relay: \(error)\(inUse)")
            throw ExitStatus.stateInUse
        } catch {
            logger.critical("cannot use the state directory", metadata: ["error": "\(error)"])
            throw ExitStatus.ioError
        }
    }

    /// Runs as one of several instances sharing `postgres`. The database holds all the state; the instance's state
    /// directory holds only its lock (one instance per directory, so `reload` finds it) and reload answers.
    private func runOnPostgres(
        _ postgres: PostgresStoreConfig, config: RelayConfig, registry: PrometheusCollectorRegistry, environment: [String: String], logger: Logger,
        flushLogs: @escaping @Sendable () -> Void
    ) async throws {
        let url = try postgresURL(postgres, configFile: store.config)
        let directory = StateDirectory.resolve(flag: store.stateDirectory, config: config, environment: environment)
        let lock = try Self.lock(directory, logger: logger, inUse: "; each instance on a machine needs a state directory of its own (--state-dir)")
        defer { lock.release() }
        // An answer left by an earlier run must not pass for the answer to a reload of this one.
        ReloadAnswer.remove(directory: directory)
        // The pool's own lines (each failed connection attempt) would flood an outage; the relay logs it once per
        // retry with what it means.
        var poolLogger = logger
        poolLogger.logLevel = .warning
        let client = PostgresClient(configuration: url.configuration, backgroundLogger: poolLogger)
        let database = RelayDatabase(client: client, schema: postgres.schema, logger: logger)
        let relay = PostgresRelay(
            config: config, configFile: store.config, environment: environment, answerDirectory: directory, database: database,
            instance: PostgresRelay.defaultInstance, logger: logger, notifier: SystemdNotifier(environment: environment),
            flushLogs: flushLogs)
        logger.info("using PostgreSQL", metadata: ["database": "\(url)", "schema": "\(postgres.schema)"])
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: client)]
        if let listen = config.metrics.listen {
            do {
                let endpoint = try await MetricsEndpoint.start(
                    listen: listen,
                    render: {
                        await relay.refreshScrapeGauges()
                        return MetricsPage.render(registry: registry.emitToBuffer())
                    }, isReady: { relay.isReady() },
                    logger: logger)
                services.append(.init(service: endpoint))
            } catch {
                logger.critical("cannot start", metadata: ["error": "\(error)"])
                throw ExitStatus.failure
            }
        }
        services.append(.init(service: relay, successTerminationBehavior: .gracefullyShutdownGroup))
        var groupConfiguration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(600 + 5)
        do {
            try await ServiceGroup(configuration: groupConfiguration).run()
        } catch {
            logger.critical("stopped on an error", metadata: ["error": "\(error)"])
            throw ExitStatus.failure
        }
    }
}
