import Logging
import Synchronization

/// Polls one source with two edges and queues what each subscription wants (docs/architecture.md, "How polling works").
///
/// - The **live edge** reads forward from the live cursor every `pollInterval`, for latency.
/// - The **settle edge** reads each time range once more, bounded by `start` and `end`, once it is `lookback` old,
///   for completeness: an event that became visible late is caught there. It yields the rate limit to the live
///   edge and runs beside it, so a slow settle read never delays a live one.
///
/// Seen ids dedupe the two. Each page and the marks it moves commit in one transaction, so no mark passes an event
/// that is not queued. One poll serves every subscription of the source that is current.
///
/// - The **catch-up edge** reads, for each subscription that is behind (new with `startFrom` in the past, or whose
///   queue filled), the range from its own position to the settle mark, then joins it to the shared poll
///   (`Poller+CatchUp.swift`).
public final class Poller<C: Clock>: Sendable where C.Duration == Duration, C: Sendable {
    /// The Events API's result window: `from + size` may not pass it.
    public static var resultWindow: Int { 10_000 }
    /// How far behind the API's now (``EventsAPIClient/apiNow(date:sentAt:receivedAt:)``: when the request was sent) a
    /// caught-up live cursor stays: slack for a relay clock a little ahead of the API's and for an API that shows an
    /// event a moment after its time.
    public static var liveMargin: Duration { .milliseconds(50) }
    /// A full live page whose newest event is this close to the API's now ends the poll: what follows is newer
    /// still and is read one poll later, which saves the request that would only find the end. Without it, a
    /// stream of about a page per poll would cost two requests a poll.
    public static var recentEnough: Duration { .milliseconds(100) }

    let source: SourceConfig
    let store: any SourceStore
    /// Where subscription cursors are kept, for the catch-up edge. Without it every subscription of the source is
    /// fed by the shared poll.
    let subscriptionCursors: (any SubscriptionCursorStore)?
    /// Where replay requests are kept, for the catch-up edge to carry out.
    let replays: (any ReplayStore)?
    let time: RelayTime<C>
    private var clock: C { time.clock }
    var now: @Sendable () -> Timestamp { time.now }
    let logger: Logger
    let walk: PageWalk<C>
    /// What the poller saw, for status and health.
    public let health = SourceHealth()
    private let metrics: SourceMetrics
    /// Called after a commit queued deliveries; set after the poller is built.
    private let queuedHook = CallbackSlot<[String: [Delivery]]>()
    /// Where the live edge's current or last walk began: the settle edge never reads past it, since the live walk
    /// settles what it reads from there on when it reads it late enough (a backlog).
    private let liveWalkStart = Mutex<Timestamp?>(nil)
    /// The subscriptions of this source as the config in force has them (a reload may change their webhooks).
    let subscriptions: SubscriptionsInForce
    /// The API's clock less the relay's at the last response, to place the settle edge on the API's time.
    private let apiClockOffset = Mutex<Duration>(.zero)
    /// The source polled.
    public var sourceConfig: SourceConfig { source }

    /// A poller for `source` feeding `subscriptions` (those of this source).
    public init(
        source: SourceConfig, subscriptions: [SubscriptionConfig], store: any SourceStore, client: EventsAPIClient<C>,
        time: RelayTime<C>, logger: Logger, progress: ProgressMonitor? = nil
    ) {
        self.source = source
        let metrics = SourceMetrics(source: source.name)
        metrics.pollInterval(source.pollInterval)
        self.metrics = metrics
        self.store = store
        subscriptionCursors = store as? any SubscriptionCursorStore
        replays = store as? any ReplayStore
        self.time = time
        let inForce = SubscriptionsInForce(subscriptions)
        self.subscriptions = inForce
        var logger = logger
        logger[metadataKey: "source"] = "\(source.name)"
        self.logger = logger
        walk = PageWalk(
            source: source, router: Router(subscriptions: subscriptions), store: store, client: client, time: time,
            logger: logger, health: health, metrics: metrics, onQueued: { [queuedHook] in queuedHook($0) },
            progress: progress, queueLimits: { inForce.queueLimits })
    }

    /// Takes the subscriptions of a reload that left this poller's routing as it was (their webhooks, `maxQueued`
    /// included, may have changed).
    public func update(_ subscriptions: [SubscriptionConfig]) {
        self.subscriptions.set(subscriptions)
    }

    /// Calls `hook` whenever a commit queued deliveries, so that dispatchers start at once instead of on a timer;
    /// it gets what the shared poll queued, per subscription (empty for a subscription's own reads).
    public func onQueued(_ hook: @escaping @Sendable ([String: [Delivery]]) -> Void) { queuedHook.set(hook) }

    /// Runs both edges until cancelled. Throws only for the state store (exit 74): API trouble is retried forever.
    public func run() async throws {
        _ = try await startingMarks()
        try await withThrowingTaskGroup(of: Void.self) { edges in
            edges.addTask { try await self.runLiveEdge() }
            edges.addTask { try await self.runSettleEdge() }
            edges.addTask { try await self.runCatchUpEdge() }
            // next(), not waitForAll(): a failing store must stop the other edge too.
            while try await edges.next() != nil {}
        }
    }

    private func runLiveEdge() async throws {
        var lastPrune = clock.now
        while !Task.isCancelled {
            try await pollLive()
            if lastPrune.duration(to: clock.now) >= .seconds(60) {
                try await store.pruneSeen(source: source.name)
                lastPrune = clock.now
            }
            try await clock.sleep(for: source.pollInterval)
        }
    }

    private func runSettleEdge() async throws {
        while !Task.isCancelled {
            try await settle()
            try await clock.sleep(for: source.pollInterval)
        }
    }

    /// The stored marks, or the first ones from `startFrom`, stored at once so a restart does not skip ahead.
    @discardableResult
    public func startingMarks() async throws -> SourceMarks {
        let first: Timestamp
        switch source.startFrom {
        case .now: first = now()
        case .earliest: first = Timestamp(millisecondsSinceEpoch: 0)
        case .time(let time): first = time
        }
        let isNew = try await store.marks(of: source.name) == nil
        let marks = try await store.initializeMarks(of: source.name, at: first, lookback: source.lookback, now: now())
        if isNew { logger.info("starting from \(marks.live.iso8601)", metadata: ["startFrom": "\(source.startFrom)"]) }
        health.update {
            $0.cursor = marks.live
            $0.settled = marks.settled
        }
        return marks
    }

    /// The live cursor in force, initializing it on first use.
    public func startingCursor() async throws -> Timestamp { try await startingMarks().live }

    /// One live poll: reads forward from the live cursor until a page comes back short (or a full one reaches
    /// ``recentEnough`` of now), then moves the cursor to the API's now less ``liveMargin``, even when nothing was
    /// read, so that lag means "behind". It never moves the cursor past that bound: an event stamped in the future
    /// is queued when read and skips nothing.
    ///
    /// A walk that reads events at least `lookback` after their time (a backlog) also moves the settle mark, when
    /// the mark already reaches where the walk began: such a range needs no second read. Returns the live cursor.
    @discardableResult
    public func pollLive() async throws -> Timestamp {
        let marks = try await currentMarks()
        let start = max(Self.queryStart(marks.live), marks.seenHorizon)
        liveWalkStart.withLock { $0 = start }
        let lookback = source.lookback
        var settledPrefix = start
        var contiguous = true
        let last = try await walk.run(.live, start: start, end: nil, nowWithin: Self.recentEnough) { page in
            let bound = page.apiNow.advanced(by: .zero - Self.liveMargin)
            let ripe = page.apiNow.advanced(by: .zero - lookback)
            if contiguous {
                // Pages settle in order from `start`; the first one read too early ends what this walk settles.
                settledPrefix = max(settledPrefix, min(page.readThrough, ripe))
                contiguous = page.readThrough <= ripe
            }
            return MarkAdvance(
                live: min(page.readThrough, bound), settled: lookback > .zero ? settledPrefix : nil, settledOnlyFrom: start)
        }
        apiClockOffset.withLock { $0 = now().duration(to: last.apiNow) }
        let updated = try await currentMarks()
        health.update {
            $0.cursor = updated.live
            $0.settled = updated.settled
            $0.lastCaughtUpAt = last.apiNow
        }
        metrics.liveCursor(updated.live, apiNow: last.apiNow)
        return updated.live
    }

    /// One settle pass, when one is due: reads `[settled, min(API now − lookback, live walk start))` with `start` and
    /// `end`, once at least ``settleStep`` of it has ripened. With `lookback: "0s"` there is no settle edge: the mark
    /// follows the live walk without reading. Returns whether it read.
    @discardableResult
    public func settle() async throws -> Bool {
        let marks = try await currentMarks()
        let liveStart = liveWalkStart.withLock { $0 } ?? marks.live
        guard source.lookback > .zero else {
            if liveStart > marks.settled { try await store.advanceSettled(source: source.name, to: liveStart) }
            return false
        }
        let apiNow = now().advanced(by: apiClockOffset.withLock { $0 })
        let target = min(apiNow.advanced(by: .zero - source.lookback), liveStart)
        guard marks.settled.duration(to: target) >= settleStep else { return false }
        let start = max(Self.queryStart(marks.settled), marks.seenHorizon)
        _ = try await walk.run(.settle, start: start, end: target) { page in
            MarkAdvance(settled: page.isLast ? target : min(page.readThrough, target))
        }
        health.update { $0.settled = target }
        return true
    }

    /// How much ripened range the settle edge waits for before it reads: the fewer, larger reads the cheaper (each
    /// ends on a short page), the smaller the later a late event arrives. Half the lookback, 30 s at most.
    public var settleStep: Duration { max(source.pollInterval, min(source.lookback / 2, .seconds(30))) }

    func currentMarks() async throws -> SourceMarks {
        if let marks = try await store.marks(of: source.name) { return marks }
        return try await startingMarks()
    }

    /// One millisecond earlier than the mark, so that an API whose `start` is exclusive still returns events at
    /// exactly that time; the re-read ones are dropped by id.
    static func queryStart(_ mark: Timestamp) -> Timestamp { mark.advanced(by: .milliseconds(-1)) }
}

/// A source's subscriptions by name, replaced at a reload that keeps the poller.
final class SubscriptionsInForce: Sendable {
    private let byName: Mutex<[String: SubscriptionConfig]>

    init(_ subscriptions: [SubscriptionConfig]) { byName = Mutex(Self.index(subscriptions)) }

    func set(_ subscriptions: [SubscriptionConfig]) { byName.withLock { $0 = Self.index(subscriptions) } }
    subscript(name: String) -> SubscriptionConfig? { byName.withLock { $0[name] } }
    var names: [String] { byName.withLock { $0.keys.sorted() } }
    /// Each subscription's `maxQueued`.
    var queueLimits: [String: Int] { byName.withLock { $0.mapValues(\.webhook.maxQueued) } }

    private static func index(_ subscriptions: [SubscriptionConfig]) -> [String: SubscriptionConfig] {
        Dictionary(subscriptions.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    }
}
