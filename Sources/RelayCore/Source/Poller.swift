import Logging
import Synchronization

/// Polls one source in ascending time order from its durable cursor and queues what each subscription wants.
///
/// One poll serves every subscription of the source. A page and the cursor move together in one transaction, so
/// the cursor never passes an event that is not queued; re-reads (lookback, window restarts, restarts after a
/// crash) are dropped by event id in the store.
public final class Poller<C: Clock>: Sendable where C.Duration == Duration, C: Sendable {
    /// The Events API's result window: `from + size` may not pass it.
    public static var resultWindow: Int { 10_000 }

    private let source: SourceConfig
    private let router: Router
    private let store: StateStore
    private let client: EventsAPIClient<C>
    private let clock: C
    private let now: @Sendable () -> Timestamp
    private let logger: Logger
    /// What the poller saw, for status and health.
    public let health = SourceHealth()
    private let metrics: SourceMetrics
    private let queuedHook = Mutex<(@Sendable () -> Void)?>(nil)
    /// The source polled.
    public var sourceConfig: SourceConfig { source }

    /// A poller for `source` feeding `subscriptions` (those of this source).
    public init(
        source: SourceConfig, subscriptions: [SubscriptionConfig], store: StateStore, client: EventsAPIClient<C>,
        clock: C, now: @escaping @Sendable () -> Timestamp, logger: Logger
    ) {
        self.source = source
        self.router = Router(subscriptions: subscriptions)
        self.metrics = SourceMetrics(source: source.name)
        self.store = store
        self.client = client
        self.clock = clock
        self.now = now
        var logger = logger
        logger[metadataKey: "source"] = "\(source.name)"
        self.logger = logger
    }

    /// Calls `hook` whenever a commit queued deliveries, so that dispatchers start at once instead of on a timer.
    public func onQueued(_ hook: @escaping @Sendable () -> Void) { queuedHook.withLock { $0 = hook } }

    /// Polls until cancelled. Throws only for the state store (exit 74): API trouble is retried forever.
    public func run() async throws {
        var cursor = try await startingCursor()
        var lastPrune = clock.now
        while !Task.isCancelled {
            cursor = try await drain(from: cursor)
            if lastPrune.duration(to: clock.now) >= .seconds(60) {
                try await store.pruneSeen(source: source.name, before: seenHorizon(cursor))
                lastPrune = clock.now
            }
            try await clock.sleep(for: source.pollInterval)
        }
    }

    /// The stored cursor, or the first one from `startFrom`, stored at once so a restart does not skip ahead.
    public func startingCursor() async throws -> Timestamp {
        if let stored = try await store.cursor(of: source.name) {
            health.update { $0.cursor = stored }
            return stored
        }
        let first: Timestamp
        switch source.startFrom {
        case .now: first = now()
        case .earliest: first = Timestamp(millisecondsSinceEpoch: 0)
        case .time(let time): first = time
        }
        let cursor = try await store.initializeCursor(of: source.name, to: first, now: now())
        logger.info("starting from \(cursor.iso8601)", metadata: ["startFrom": "\(source.startFrom)"])
        health.update { $0.cursor = cursor }
        return cursor
    }

    /// Pages forward from `cursor − lookback` until a page comes back short (caught up), restarting the query at
    /// the last timestamp seen whenever the 10,000-result window would be passed. Returns the new cursor.
    ///
    /// Page n+1 is fetched and decoded while page n commits: the two halves run on different threads, and the
    /// cursor still moves only in the transaction that queues the page.
    public func drain(from initialCursor: Timestamp) async throws -> Timestamp {
        try await withThrowingTaskGroup(of: EnqueueResult.self) { commits in
            var cursor = initialCursor
            var commitInFlight = false
            // One millisecond earlier than asked, so that an API whose `start` is exclusive still returns events at
            // exactly that time; the re-read ones are dropped by id.
            var windowStart = cursor.advanced(by: .zero - source.lookback).advanced(by: .milliseconds(-1))
            var from = 0
            var pagesSincePrune = 0
            let pageSize = source.pageSize

            func awaitCommit() async throws {
                guard commitInFlight, let result = try await commits.next() else { return }
                commitInFlight = false
                health.update { $0.duplicates += result.duplicates }
                metrics.eventsQueued.increment(by: result.queued)
                if result.queued > 0 { queuedHook.withLock { $0 }?() }
                metrics.duplicates.increment(by: result.duplicates)
            }

            while true {
                let page = try await fetchWithRetries(start: windowStart, from: from)
                let events = page.events.enumerated().sorted {
                    ($0.element.time, $0.offset) < ($1.element.time, $1.offset)
                }.map(\.element)
                let newCursor = max(cursor, events.last?.time ?? cursor)
                let routed = events.map { RoutedEvent(event: $0, subscriptions: router.route($0)) }
                try await awaitCommit()
                let (store, name, now) = (self.store, source.name, now())
                commits.addTask { try await store.enqueue(source: name, events: routed, cursor: newCursor, now: now) }
                commitInFlight = true
                cursor = newCursor
                health.update {
                    $0.pages += 1
                    $0.eventsRead += events.count
                    $0.lastSuccessAt = now
                }
                metrics.eventsReceived.increment(by: events.count)
                if page.elementCount < pageSize {
                    try await awaitCommit()
                    health.update {
                        $0.cursor = cursor
                        $0.lastCaughtUpAt = now
                    }
                    metrics.cursorLag.record(Double(now.millisecondsSinceEpoch - cursor.millisecondsSinceEpoch) / 1000)
                    return cursor
                }
                pagesSincePrune += 1
                if pagesSincePrune >= 1000 {
                    // A long backlog drain would otherwise keep every id it read until it caught up.
                    try await awaitCommit()
                    try await store.pruneSeen(source: name, before: seenHorizon(cursor))
                    pagesSincePrune = 0
                }
                health.update { $0.cursor = cursor }
                from += pageSize
                if from + pageSize > Self.resultWindow {
                    let last = events.last?.time ?? windowStart
                    var restart = last.advanced(by: .milliseconds(-1))
                    if restart <= windowStart {
                        // More events at one millisecond than the API can page through: nothing reaches the rest.
                        logger.error(
                            "more than \(Self.resultWindow) events share one millisecond; the API cannot page past them, skipping the rest of it",
                            metadata: ["time": "\(last.iso8601)"])
                        restart = last.advanced(by: .milliseconds(1))
                    }
                    logger.info("result window full, restarting the query at the last timestamp seen", metadata: ["start": "\(restart.iso8601)"])
                    health.update { $0.windowRestarts += 1 }
                    windowStart = restart
                    from = 0
                }
            }
        }
    }

    /// Asks until a page decodes, backing off between failures; logs when the source turns unhealthy and back.
    private func fetchWithRetries(start: Timestamp, from: Int) async throws -> EventPageDecoder.Page {
        var failures = 0
        var random = SystemRandomNumberGenerator()
        while true {
            try Task.checkCancellation()
            switch try await client.fetch(start: start, from: from) {
            case .page(let page):
                metrics.response("200")
                if failures > 0 || health.snapshot.problem != nil {
                    logger.notice("source healthy again", metadata: ["after_failures": "\(failures)"])
                }
                health.update {
                    $0.consecutiveFailures = 0
                    $0.problem = nil
                }
                logSkipped(page.skipped)
                return page
            case .failed(let failure):
                metrics.response(failure.status.map(String.init) ?? failure.kind.rawValue)
                failures += 1
                let wait = failure.retryAfter.map { min($0, .seconds(3600)) }
                    ?? Self.backoff(for: failure.kind).delay(retry: failures, using: &random)
                let isNewProblem = health.snapshot.problem == nil
                health.update {
                    $0.consecutiveFailures = failures
                    $0.problem = "\(failure.kind.rawValue): \(failure)"
                }
                if isNewProblem || failures.isPowerOfTwo {
                    let level: Logger.Level = failure.kind == .unauthorized || failure.kind == .rejected ? .error : .warning
                    logger.log(
                        level: level, "source unhealthy: \(failure)",
                        metadata: ["kind": "\(failure.kind.rawValue)", "failures": "\(failures)", "retry_in": "\(wait)"])
                }
                try await clock.sleep(for: wait)
            }
        }
    }

    private func logSkipped(_ skipped: [EventPageDecoder.SkipReason: Int]) {
        guard !skipped.isEmpty else { return }
        health.update { snapshot in
            snapshot.skipped.merge(skipped, uniquingKeysWith: +)
        }
        for (reason, count) in skipped where health.markLogged(reason) {
            logger.warning(
                "skipping events the relay cannot read (logged once per kind)",
                metadata: ["reason": "\(reason.rawValue)", "count": "\(count)"])
        }
    }

    /// Seen ids older than this are never re-read: polls start at cursor − lookback.
    private func seenHorizon(_ cursor: Timestamp) -> Timestamp {
        cursor.advanced(by: .zero - source.lookback - max(.seconds(60), source.lookback))
    }

    static func backoff(for kind: EventsAPIClient<C>.Failure.Kind) -> Backoff {
        switch kind {
        case .unauthorized, .rejected: return Backoff(initial: .seconds(30), maximum: .seconds(300))
        case .rateLimited, .serverError, .transport, .malformed: return Backoff(initial: .seconds(1), maximum: .seconds(60))
        }
    }
}

extension Int {
    var isPowerOfTwo: Bool { self > 0 && self & (self - 1) == 0 }
}
