import CurlHTTP
import Foundation
import Logging
import PostgresNIO
import RelayCore
import ServiceLifecycle
import Synchronization
import UnixSignals
#if canImport(Glibc)
import Glibc
#endif

/// The relay on PostgreSQL, one of several instances sharing a schema (docs/several-instances.md): each source is
/// polled by the instance that holds its lease, and every instance delivers every subscription by claims. A
/// database that goes away makes it wait and retry (logged, `/readyz` 503); it never exits for it.
///
/// SIGHUP reloads the config: a valid one replaces the running one as a stop would (polling stops and the source's
/// lease is given up, deliveries in flight finish within `shutdownGrace`) followed by a start; an invalid one is
/// rejected and the running one stays. Either way the answer goes where `intilery-relay reload` waits for it.
public final class PostgresRelay: Service, Sendable {
    private let initialConfig: RelayConfig
    /// The config in force, for the scrape.
    private let current: Mutex<RelayConfig>
    private let configFile: String
    private let environment: [String: String]
    /// Where each reload's ``ReloadAnswer`` goes (the instance's state directory); nil writes none.
    private let answerDirectory: String?
    /// Writes the "suppressed N similar lines" summaries of the rate-limited log.
    private let flushLogs: @Sendable () -> Void
    private let database: RelayDatabase
    private let instance: String
    private let logger: Logger
    private let notifier: SystemdNotifier
    private let time = RelayTime.system
    private let stop = StopSignal()
    /// When the database last answered, and last failed to, by the monotonic clock; no answer before the schema
    /// was migrated.
    private let contact = Mutex<(answer: ContinuousClock.Instant?, failure: ContinuousClock.Instant?)>((nil, nil))
    /// The dispatchers running, for the scrape's requests in flight.
    private let dispatchers = Mutex<[ClaimDispatcher<ContinuousClock>]>([])
    private let scrape = ScrapeRefresh()

    /// A relay for `config` (read from `configFile`, whose secrets `environment` resolves at a reload) in
    /// `database`, as `instance` (unique among the instances: host and pid).
    public init(
        config: RelayConfig, configFile: String, environment: [String: String], answerDirectory: String?, database: RelayDatabase,
        instance: String, logger: Logger, notifier: SystemdNotifier, flushLogs: @escaping @Sendable () -> Void = {}
    ) {
        self.flushLogs = flushLogs
        initialConfig = config
        current = Mutex(config)
        self.configFile = configFile
        self.environment = environment
        self.answerDirectory = answerDirectory
        self.database = database
        self.instance = instance
        var logger = logger
        logger[metadataKey: "instance"] = "\(instance)"
        self.logger = logger
        self.notifier = notifier
    }

    /// This host and process, as leases and claims name the instance.
    public static var defaultInstance: String { "\(ProcessInfo.processInfo.hostName)/\(ProcessInfo.processInfo.processIdentifier)" }

    /// How long a source's lease lasts unrenewed: a poll interval and a quarter (at least a second). It is renewed
    /// every third of that, and the instances that do not hold it try for it every quarter, so that a dead
    /// holder's source is polled again by another instance within about one and a half poll intervals.
    public static func leaseTTL(for source: SourceConfig) -> Duration { max(source.pollInterval * 1.25, .seconds(1)) }

    /// How long any call to the database may take, waiting for a connection included: more than the default
    /// `statement_timeout` (30 s), so that the server's limit speaks first when it applies.
    public static let queryDeadline: Duration = .seconds(45)

    /// Ready once the schema is migrated, while the database answered within the last 30 s and no call to it has
    /// failed since its last answer: a database gone away turns `/readyz` 503 at the first failed call (a lease is
    /// renewed or tried for every fraction of a poll interval), not half a minute later.
    public func isReady() -> Bool {
        let (answer, failure) = contact.withLock { $0 }
        guard let answer else { return false }
        return answer.duration(to: .now) < .seconds(30) && failure.map { $0 < answer } ?? true
    }

    private func answered() { contact.withLock { $0.answer = .now } }

    private func failed() { contact.withLock { $0.failure = .now } }

    /// Reads the shared queue's gauges (depth, oldest event's age, dead letters, pause) for every subscription,
    /// and this instance's requests in flight: called when `/metrics` is scraped, bounded in time as on SQLite.
    public func refreshScrapeGauges() async {
        let (database, config, time) = (database, current.withLock { $0 }, time)
        let running = dispatchers.withLock { $0 }
        await scrape.refresh {
            let status = PostgresStatus(database)
            let gauges = try await status.queueGauges()
            for subscription in config.subscriptions.map(\.name) {
                let queue = gauges[subscription] ?? .init()
                SubscriptionMetrics.recordShared(
                    subscription: subscription, pending: queue.pending, oldestEventTime: queue.oldestEventTime,
                    deadLetters: queue.deadLetters, paused: queue.paused,
                    inFlight: running.first { $0.subscriptionName == subscription }?.requestsInFlight ?? 0, now: time.now())
            }
        }
    }

    private enum Command: Sendable {
        case reload, shutdown
    }

    public func run() async throws {
        let http = CurlHTTPClient(configuration: .init(userAgent: "intilery-relay/\(RelayVersion.current)"))
        let (commands, commandSink) = AsyncStream.makeStream(of: Command.self)
        // Registered before READY=1: a SIGHUP that `systemctl reload` sends right after the start must find the
        // handler, not the ignored disposition `run` sets first.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in hangups { commandSink.yield(.reload) }
                }
                defer { group.cancelAll() }
                guard await migrate() else { return }
                var config = initialConfig
                var generation = start(config, http: http, in: &group)
                notifier.ready(status: config.summary)
                for await command in commands {
                    switch command {
                    case .shutdown:
                        logger.info("stopping: polling stopped, letting deliveries in flight finish", metadata: ["grace_s": .stringConvertible(LogSeconds(config.shutdownGrace))])
                        notifier.stopping(within: config.shutdownGrace + SystemdNotifier.stopMargin)
                        generation.ended.fire()
                        await generation.finished.wait()
                        return
                    case .reload:
                        let startedAt = MonotonicClock.nanoseconds()
                        notifier.reloading()
                        switch loadConfig() {
                        case .success(let next):
                            let needsRestart = ConfigInForce.settingsNeedingRestart(from: config, to: next)
                            for setting in needsRestart {
                                logger.notice("this change takes effect at the next restart", metadata: ["setting": "\(setting)"])
                            }
                            logger.notice(
                                "reloading: polling stopped, letting deliveries in flight finish, then starting with the new config",
                                metadata: ["grace_s": .stringConvertible(LogSeconds(config.shutdownGrace))])
                            generation.ended.fire()
                            await generation.finished.wait()
                            config = next
                            current.withLock { $0 = next }
                            generation = start(config, http: http, in: &group)
                            logger.notice("reloaded", metadata: ["sources": .stringConvertible(config.sources.count), "subscriptions": .stringConvertible(config.subscriptions.count)])
                            answer(ReloadAnswer(pid: getpid(), startedAt: startedAt, outcome: .applied, needsRestart: needsRestart))
                        case .failure(let error):
                            answer(ReloadAnswer(pid: getpid(), startedAt: startedAt, outcome: .rejected, problems: error.lines))
                        }
                        notifier.ready(status: config.summary)
                    }
                }
            }
        } onGracefulShutdown: { [stop] in
            stop.fire()
            commandSink.yield(.shutdown)
        }
        await http.shutdown()
        logger.info("stopped")
    }

    /// One run of a config: its pollers and dispatchers, until `ended` fires; `finished` fires once they are done.
    private struct Generation {
        let ended = StopSignal()
        let finished = StopSignal()
    }

    /// Starts `config`'s pollers and dispatchers in `group`.
    private func start(_ config: RelayConfig, http: CurlHTTPClient, in group: inout TaskGroup<Void>) -> Generation {
        let generation = Generation()
        group.addTask {
            await self.runGeneration(config, http: http, until: generation.ended)
            generation.finished.fire()
        }
        return generation
    }

    /// Polls and delivers for `config` until `ended` fires: polling then stops at once (the leases given up), and
    /// deliveries in flight get `shutdownGrace`; what is cut short then is claimed again by another instance.
    private func runGeneration(_ config: RelayConfig, http: CurlHTTPClient, until ended: StopSignal) async {
        // Before any poll: a new subscription that backfills is never fed by the shared poll before it has its place.
        guard await registerSubscriptions(config, until: ended) else { return }
        await withTaskGroup(of: Void.self) { group in
            let dispatchers = config.subscriptions.map { subscription in
                ClaimDispatcher(
                    subscription: subscription, queue: DeadlineClaimQueue(PostgresDeliveries(database), limit: Self.queryDeadline),
                    guards: DeadlineWebhookGuards(PostgresWebhookGuards(database), limit: Self.queryDeadline),
                    pauses: DeadlinePauses(PostgresPauses(database), limit: Self.queryDeadline), http: http,
                    instance: instance, time: time, logger: logger)
            }
            self.dispatchers.withLock { $0 = dispatchers }
            let wake: @Sendable ([String: [Delivery]]) -> Void = { queued in
                for dispatcher in dispatchers where queued[dispatcher.subscriptionName] != nil { dispatcher.wakeup.signal() }
            }
            let (delivering, delivered) = (StopSignal(), StopSignal())
            group.addTask {
                await withTaskGroup(of: Void.self) { deliveries in
                    for dispatcher in dispatchers { deliveries.addTask { await dispatcher.run(stop: delivering) } }
                }
                delivered.fire()
            }
            group.addTask { await self.maintain(config, until: ended) }
            let limiters = APIRateLimiters(clock: time.clock)
            for sources in PostgresSourceStore.tokenGroups(config.sources) {
                group.addTask {
                    await self.pollWhileHoldingTheLease(sources, of: config, http: http, limiters: limiters, until: ended, onQueued: wake)
                }
            }
            logger.info(
                "started on PostgreSQL", metadata: ["version": "\(RelayVersion.current)", "schema": "\(database.schema)",
                                                     "sources": .stringConvertible(config.sources.count), "subscriptions": .stringConvertible(config.subscriptions.count)])
            await ended.wait()
            delivering.fire()
            await withTaskGroup(of: Void.self) { grace in
                grace.addTask { await delivered.wait() }
                grace.addTask { [time] in try? await time.sleep(for: config.shutdownGrace) }
                _ = await grace.next()
                grace.cancelAll()
            }
            group.cancelAll()
        }
    }

    /// Records the config's subscriptions in the database (a new one with `startFrom` in the past starts behind,
    /// at that time) and reports the names it no longer has (orphans), retrying while the database is away; false
    /// when `ended` fired first.
    private func registerSubscriptions(_ config: RelayConfig, until ended: StopSignal) async -> Bool {
        var failures = 0
        let store = PostgresSourceStore(database, limit: Self.queryDeadline)
        let orphans = PostgresOrphans(database)
        while !ended.isFired {
            do {
                try await withQueryDeadline(Self.queryDeadline, "recording the subscriptions") { [logger, time] in
                    try await ConfigInForce.record(config, cursors: store, orphans: orphans, now: time.now(), logger: logger)
                }
                answered()
                return true
            } catch {
                failed()
                failures += 1
                logger.warning("cannot reach PostgreSQL to record the subscriptions; retrying", metadata: ["error": "\(String(reflecting: error))"])
                await pause(for: Self.backoff(failures), until: ended)
            }
        }
        return false
    }

    /// Every 10 s until `ended`: the suppressed-lines summaries of the log, and the dead letters and orphans past
    /// their retention deleted (whichever instance gets there first; the others find nothing left).
    private func maintain(_ config: RelayConfig, until ended: StopSignal) async {
        let (letters, orphans) = (PostgresDeadLetters(database), PostgresOrphans(database))
        while !ended.isFired {
            flushLogs()
            do {
                let now = time.now()
                let pruned = try await withQueryDeadline(Self.queryDeadline, "pruning dead letters") {
                    try await letters.pruneDeadLetters(before: now.advanced(by: .zero - config.deadLetters.retention))
                }
                if pruned > 0 { logger.info("pruned dead letters past retention", metadata: ["count": .stringConvertible(pruned)]) }
                let removed = try await withQueryDeadline(Self.queryDeadline, "deleting removed subscriptions past orphanRetention") {
                    try await orphans.pruneOrphans(olderThan: config.orphanRetention, now: now)
                }
                for name in removed {
                    logger.notice("deleted the queued events and dead letters of a removed subscription: orphanRetention passed", metadata: ["subscription": "\(name)"])
                }
            } catch {
                logger.warning("could not prune past retention; trying again", metadata: ["error": "\(String(reflecting: error))"])
            }
            await pause(for: .seconds(10), until: ended)
        }
        flushLogs()
    }

    private func loadConfig() -> Result<RelayConfig, ConfigError> {
        ConfigInForce.reload(file: configFile, environment: environment, logger: logger)
    }

    /// For `intilery-relay reload` (``ConfigInForce/answer(_:in:logger:)``).
    private func answer(_ answer: ReloadAnswer) {
        ConfigInForce.answer(answer, in: answerDirectory, logger: logger)
    }

    /// Brings the schema to this release's version, retrying while the database is away; false when stopped first.
    private func migrate() async -> Bool {
        var failures = 0
        while !stop.isFired {
            do {
                let applied = try await withQueryDeadline(Self.queryDeadline, "migrating the schema") { [database] in
                    try await PostgresSchema.migrate(database)
                }
                if !applied.isEmpty { logger.notice("migrated the PostgreSQL schema", metadata: ["versions": "\(applied)"]) }
                answered()
                return true
            } catch let error as PostgresSchema.NewerSchema {
                logger.critical("\(error)")
                failures += 1
            } catch {
                failed()
                failures += 1
                logger.warning("cannot reach PostgreSQL; retrying", metadata: ["error": "\(String(reflecting: error))", "failures": .stringConvertible(failures)])
            }
            await pause(for: Self.backoff(failures), until: stop)
        }
        return false
    }

    static func backoff(_ failures: Int) -> Duration { min(.milliseconds(500) * (1 << min(failures, 6)), .seconds(30)) }

    /// Waits for `duration`, or less if `stop` fires.
    private func pause(for duration: Duration, until stop: StopSignal) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [time] in try? await time.sleep(for: duration) }
            group.addTask { [stop] in await stop.wait() }
            _ = await group.next()
            group.cancelAll()
        }
    }

    /// Polls `sources`, a token group, whenever this instance holds the group's lease, and tries to take the lease
    /// whenever nobody does. The lease lasts as the shortest poll interval of the group asks.
    private func pollWhileHoldingTheLease(
        _ sources: [SourceConfig], of config: RelayConfig, http: CurlHTTPClient, limiters: APIRateLimiters<ContinuousClock>,
        until stop: StopSignal, onQueued: @escaping @Sendable ([String: [Delivery]]) -> Void
    ) async {
        let leases = PostgresLeases(database)
        let store = PostgresSourceStore(database, limit: Self.queryDeadline)
        let key = PostgresSourceStore.leaseKey(ofGroup: sources)
        let ttl = sources.map(Self.leaseTTL(for:)).min() ?? .seconds(1)
        let names = sources.map(\.name).joined(separator: ",")
        var logger = logger
        logger[metadataKey: "source"] = "\(names)"
        var failures = LeaseFailures()
        func held(_ lease: Lease?) {
            for source in sources {
                store.hold(lease, for: source.name)
                SourceMetrics.leaseHeld(source: source.name, lease != nil)
            }
        }
        held(nil)
        while !stop.isFired {
            let lease: Lease
            do {
                let taken = try await withQueryDeadline(ttl, "taking the lease of \(names)") { [instance] in
                    try await leases.acquire(key, for: instance, ttl: ttl)
                }
                guard let taken else {
                    answered()
                    await pause(for: ttl / 4, until: stop)
                    continue
                }
                lease = taken
                answered()
            } catch {
                failed()
                failures.failed(afterRenewing: false)
                logger.warning("cannot reach PostgreSQL for the source's lease; retrying", metadata: ["error": "\(String(reflecting: error))"])
                await pause(for: failures.pause ?? .zero, until: stop)
                continue
            }
            logger.notice("took the source's lease: polling it", metadata: ["epoch": .stringConvertible(lease.epoch)])
            held(lease)
            let pollers = sources.map { source in
                let subscriptions = config.subscriptions(of: source)
                var logger = logger
                logger[metadataKey: "source"] = "\(source.name)"
                let client = EventsAPIClient(source: source, subscriptions: subscriptions, http: http, limiter: limiters.limiter(for: source), now: time.now)
                let poller = Poller(source: source, subscriptions: subscriptions, store: store, client: client, time: time, logger: logger)
                poller.onQueued(onQueued)
                return poller
            }
            let renewedOnce = AtomicFlag()
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for poller in pollers { group.addTask { try await poller.run() } }
                    group.addTask { [time, stop] in
                        while !stop.isFired {
                            try await time.sleep(for: ttl / 3)
                            // A renewal slower than the lease itself is no renewal.
                            let renewed = try await withQueryDeadline(ttl, "renewing the lease of \(names)") { try await leases.renew(lease, ttl: ttl) }
                            guard renewed else { throw LeaseLost(key: key, epoch: lease.epoch) }
                            renewedOnce.set()
                            self.answered()
                        }
                    }
                    group.addTask { [stop] in await stop.wait() }
                    _ = try await group.next()
                    group.cancelAll()
                }
                failures = LeaseFailures()
            } catch let error as LeaseLost {
                failures.lost(afterRenewing: renewedOnce.isSet)
                logger.notice(
                    "lost the source's lease: it ran out before it was renewed, and another instance (or this one, later) takes it",
                    metadata: ["epoch": .stringConvertible(error.epoch)])
            } catch {
                failed()
                failures.failed(afterRenewing: renewedOnce.isSet)
                logger.warning("polling stopped on a store error; taking the lease again", metadata: ["error": "\(String(reflecting: error))"])
            }
            held(nil)
            if stop.isFired {
                // Given up at once, so that another instance polls at its next try rather than after the TTL.
                _ = try? await withQueryDeadline(ttl, "giving up the lease of \(names)", whenCancelled: .finish) {
                    try await leases.release(lease)
                }
            } else if let pause = failures.pause {
                await self.pause(for: pause, until: stop)
            }
        }
    }
}

/// Whether a lease was renewed at least once while it was held.
/// Failures in a row of holding a source's lease, for the pause before the next try: as ``PostgresRelay``'s
/// database backoff, doubling from a second up to 30 s. A lease renewed at least once before it ended means the
/// database answered well meanwhile, so the next failure counts as a first one: a slow spell long ago does not
/// stretch every pause after it.
package struct LeaseFailures: Equatable {
    package private(set) var inARow = 0

    package init() {}

    /// Holding the lease ended on an error (or taking it failed: `afterRenewing` false).
    package mutating func failed(afterRenewing renewed: Bool) { inARow = renewed ? 1 : inARow + 1 }

    /// The lease ran out or changed hands; after a renewal, that is no failure of the database.
    package mutating func lost(afterRenewing renewed: Bool) { if renewed { inARow = 0 } }

    /// How long to wait before trying again; nil for at once.
    package var pause: Duration? { inARow == 0 ? nil : PostgresRelay.backoff(inARow) }
}
