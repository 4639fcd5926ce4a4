import Logging

/// One page as a walk read it.
struct WalkPage: Sendable {
    /// The page's events in ascending time, ties in response order.
    var events: [Event]
    /// The API's clock when it answered.
    var apiNow: Timestamp
    /// A short page: the range held nothing more when it was read.
    var isLast: Bool
    /// Where the walk's query started.
    var start: Timestamp

    /// Every event before this that was visible at `apiNow` has been read by the walk: the whole API's now after
    /// a short page, the page's last time otherwise (more events of that millisecond may follow on the next page).
    var readThrough: Timestamp { isLast ? apiNow : events.last?.time ?? start }

    /// Whether the page's newest event is within `margin` of the API's now.
    func reaches(within margin: Duration) -> Bool {
        guard let last = events.last?.time else { return false }
        return last >= apiNow.advanced(by: .zero - margin)
    }
}

/// Which read of a source a walk serves: in logs, metrics and which requests yield to which.
enum PollEdge: String, Sendable {
    case live
    case settle
    /// A subscription's own read, while it is behind the shared poll.
    case catchUp = "catch_up"
}

/// Commits one page of a walk that does not feed the shared poll: a subscription's own read.
typealias WalkCommit = @Sendable (_ events: [Event], _ page: WalkPage) async throws -> EnqueueResult

/// Pages through one time range of the Events API in ascending order and queues what it reads, page by page: the
/// mechanics both edges share. It restarts the query at the last timestamp seen whenever the 10,000-result window
/// would be passed, retries failed requests forever with backoff, and commits page n while fetching the next: the
/// shared poll's pages read while a commit runs go in the next commit together (at most ``pagesPerCommit``). What
/// each commit does to the source's marks is the edge's business, passed in as `advance`.
struct PageWalk<C: Clock>: Sendable where C.Duration == Duration, C: Sendable {
    let source: SourceConfig
    let router: Router
    let store: any SourceStore
    let client: EventsAPIClient<C>
    let time: RelayTime<C>
    var now: @Sendable () -> Timestamp { time.now }
    let logger: Logger
    let health: SourceHealth
    let metrics: SourceMetrics
    /// Called after a commit queued deliveries, with what the shared poll queued per subscription.
    let onQueued: @Sendable ([String: [Delivery]]) -> Void
    /// Store steps are watched, so that a store that stops answering stops the watchdog's pings.
    let progress: ProgressMonitor?
    /// Each subscription's `maxQueued`, as the config in force says.
    let queueLimits: @Sendable () -> [String: Int]

    /// Reads `[start, end)` (no end: everything from `start`) until a page comes back short, or, given `nowWithin`,
    /// until a full page reaches that close to the API's now; returns the last page read. Pages go to the shared
    /// poll's queueing, moving the marks by `advance`, unless `commit` takes them; a commit that fills its
    /// subscription's queue ends the walk.
    func run(
        _ edge: PollEdge, start: Timestamp, end: Timestamp?, nowWithin: Duration? = nil, advance: (WalkPage) -> MarkAdvance = { _ in MarkAdvance() },
        commit: WalkCommit? = nil
    ) async throws -> WalkPage {
        try await withThrowingTaskGroup(of: EnqueueResult.self) { commits in
            var commitInFlight = false
            /// Whether the shared poll's last commit has ended, so that pages read meanwhile can follow it at once.
            let commitEnded = AtomicFlag()
            /// The shared poll's pages read while a commit was in flight, committed together when it ends.
            var waiting: [PageCommit] = []
            /// Whether pages may wait for the commit in flight: not while deliveries are behind (see below).
            var readAhead = true
            var queryStart = start
            var from = 0
            var pagesSincePrune = 0
            let pageSize = source.pageSize

            /// Whether the walk may go on: false once a subscription's own read has filled its queue.
            func awaitCommit() async throws -> Bool {
                guard commitInFlight, let result = try await commits.next() else { return true }
                commitInFlight = false
                // Read ahead only while the queues are short: reading faster than deliveries go makes the queue,
                // not the deliveries, grow, and its commits take the writer from the dispatchers.
                readAhead = result.longestQueue < Self.pagesPerCommit * pageSize
                for subscription in result.filled {
                    logger.warning(
                        "queue full: stopped queueing for this subscription; it reads on from the API once below half",
                        metadata: ["subscription": "\(subscription)", "max_queued": .stringConvertible(queueLimits()[subscription] ?? 0)])
                }
                health.update {
                    $0.duplicates += result.duplicates
                    $0.newEvents += result.newEvents
                }
                metrics.eventsQueued.increment(by: result.queued)
                metrics.duplicates.increment(by: result.duplicates)
                if result.queued > 0 { onQueued(result.handOff) }
                return commit == nil || result.filled.isEmpty
            }

            /// Commits the pages waiting, once the commit in flight has ended.
            func commitWaiting() async throws {
                guard !waiting.isEmpty else { return }
                _ = try await awaitCommit()
                let (store, name, now, pages, limits) = (self.store, source.name, now(), waiting, queueLimits())
                waiting = []
                commitEnded.clear()
                commits.addTask { [progress] in
                    defer { commitEnded.set() }
                    return try await progress.step("source \(name)") {
                        try await store.enqueue(source: name, pages: pages, queueLimits: limits, now: now)
                    }
                }
                commitInFlight = true
            }

            var ahead = PagesAhead(health: health)
            defer { ahead.cancelAll() }
            // Pages read at the first try since the last failure: after one, the walk asks ahead again step by step.
            var cleanPages = Self.pagesAhead

            while true {
                // Pages already read never wait on a fetch: not on the next one once the writer is free, nor on a
                // fetch that fails and backs off.
                if commitEnded.isSet { try await commitWaiting() }
                let asked = ahead.next(start: queryStart, from: from)
                var retried = false
                let (decoded, apiNow) = try await fetchWithRetries(edge, start: queryStart, end: end, from: from, askedAhead: asked) {
                    // Pages after one that failed would come back stale after the backoff, or fail alike.
                    ahead.cancelAll()
                    retried = true
                    try await commitWaiting()
                }
                cleanPages = retried ? 0 : min(cleanPages + 1, Self.pagesAhead)
                let events = decoded.events.enumerated().sorted {
                    ($0.element.time, $0.offset) < ($1.element.time, $1.offset)
                }.map(\.element)
                let page = WalkPage(events: events, apiNow: apiNow, isLast: decoded.elementCount < pageSize, start: start)
                let marks = advance(page)
                let (store, name, now) = (self.store, source.name, now())
                let endsWalk = page.isLast || nowWithin.map({ page.reaches(within: $0) }) == true
                // Counted when the page is read (tests wait on it), unless a full queue drops it to be read again.
                func countRead() {
                    health.update {
                        $0.pages += 1
                        $0.eventsRead += events.count
                        $0.lastSuccessAt = now
                    }
                    metrics.eventsReceived.increment(by: events.count)
                }
                if !endsWalk && !Task.isCancelled {
                    // The next pages are asked for now, so that the API renders and the relay decodes them while this
                    // one is queued; only what a sequential walk would ask next, within the query's result window.
                    // Not while deliveries are behind (the walk should not race further ahead of them), and after a
                    // failure one more page at a time as pages succeed.
                    // The pages held are the ones right after this, in order: the next to ask for follows them.
                    let depth = readAhead ? min(aheadDepth(after: page, end: end), cleanPages) : 0
                    while ahead.count < depth {
                        let offset = from + pageSize * (ahead.count + 1)
                        guard offset + pageSize <= Poller<C>.resultWindow else { break }
                        ahead.add(fetchAhead(edge, start: queryStart, end: end, from: offset))
                    }
                }
                if let commit {
                    guard try await awaitCommit() else { return page }
                    countRead()
                    commits.addTask { [progress] in
                        try await progress.step("source \(name) \(edge.rawValue)") { try await commit(events, page) }
                    }
                    commitInFlight = true
                } else {
                    // Pages read while the last commit runs wait for it and go in one transaction: when commits are
                    // slower than reads (a backlog, a busy writer), the walk keeps reading instead of waiting.
                    waiting.append(PageCommit(
                        events: events.map { RoutedEvent(event: $0, subscriptions: router.route($0)) }, advance: marks,
                        skipped: decoded.skipped))
                    countRead()
                    if !commitInFlight || commitEnded.isSet || !readAhead || waiting.count >= Self.pagesPerCommit || endsWalk {
                        try await commitWaiting()
                    }
                }
                if endsWalk {
                    _ = try await awaitCommit()
                    return page
                }
                pagesSincePrune += 1
                if pagesSincePrune >= 1000 && commit == nil {
                    // A long backlog drain would otherwise keep every id it read until it caught up.
                    guard try await awaitCommit() else { return page }
                    try await store.pruneSeen(source: name)
                    pagesSincePrune = 0
                }
                from += pageSize
                if from + pageSize > Poller<C>.resultWindow {
                    queryStart = restart(after: events.last?.time ?? queryStart, queryStart: queryStart)
                    from = 0
                }
            }
        }
    }

    /// At most this many pages of the shared poll wait for a commit: they are held in memory until it ends.
    static var pagesPerCommit: Int { 10 }

    /// Where to ask again once the result window is used up: 1 ms before the last timestamp seen, so that events
    /// of that millisecond on the next page are not skipped (the re-read ones are dropped by id).
    private func restart(after last: Timestamp, queryStart: Timestamp) -> Timestamp {
        var restart = last.advanced(by: .milliseconds(-1))
        if restart <= queryStart {
            // More events at one millisecond than the API can page through: nothing reaches the rest.
            logger.error(
                "more than \(Poller<C>.resultWindow) events share one millisecond; the API cannot page past them, skipping the rest of it",
                metadata: ["time": "\(last.iso8601)"])
            restart = last.advanced(by: .milliseconds(1))
        }
        logger.info("result window full, restarting the query at the last timestamp seen", metadata: ["start": "\(restart.iso8601)"])
        health.update { $0.windowRestarts += 1 }
        return restart
    }

    /// Asks until a page decodes, backing off between failures; logs when the source turns unhealthy and back.
    private func fetchWithRetries(
        _ edge: PollEdge, start: Timestamp, end: Timestamp?, from: Int, askedAhead: PagesAhead.Request?,
        beforeBackoff: () async throws -> Void
    ) async throws -> (EventPageDecoder.Page, Timestamp) {
        var aheadRequest = askedAhead
        // A page asked ahead and not awaited (the walk was cancelled first) is not left to run.
        defer { aheadRequest?.task.cancel() }
        var failures = 0
        var random = SystemRandomNumberGenerator()
        while true {
            try Task.checkCancellation()
            var asked = time.clock.now
            let outcome: EventsAPIClient<C>.Outcome
            if let request = aheadRequest {
                // Asked for while an earlier page was read; its answer counts as this round's, failure included, so
                // that a 429 to it is waited out as the walk's own.
                aheadRequest = nil
                asked = request.asked
                let task = request.task
                outcome = try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
            } else {
                outcome = try await client.fetch(start: start, end: end, from: from, background: edge != .live)
                countResponse(outcome)
            }
            switch outcome {
            case .page(let page, let apiNow):
                metrics.polledSuccessfully(at: apiNow)
                logger.debug(
                    "page read", metadata: [
                        "edge": "\(edge.rawValue)", "start": "\(start.iso8601)", "end": "\(end?.iso8601 ?? "-")",
                        "offset": .stringConvertible(from), "events": .stringConvertible(page.events.count),
                        "took_s": .stringConvertible(LogSeconds(asked.duration(to: time.clock.now))),
                    ])
                if failures > 0 || health.snapshot.problem != nil {
                    logger.notice("source healthy again", metadata: ["after_failures": .stringConvertible(failures)])
                }
                health.update {
                    $0.consecutiveFailures = 0
                    $0.problem = nil
                }
                countSkipped(page.skipped)
                return (page, apiNow)
            case .failed(let failure):
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
                        metadata: [
                            "edge": "\(edge.rawValue)", "kind": "\(failure.kind.rawValue)", "failures": .stringConvertible(failures),
                            "retry_in_s": .stringConvertible(LogSeconds(wait)),
                        ])
                }
                try await beforeBackoff()
                try await time.sleep(for: wait)
            }
        }
    }

    /// Counts an answer in `intilery_relay_api_responses_total`. A 2xx whose body cannot be read is no success:
    /// counted as "malformed", so that an alert on status="200" is not fed by garbage.
    private func countResponse(_ outcome: EventsAPIClient<C>.Outcome) {
        switch outcome {
        case .page: metrics.response("200")
        case .failed(let failure):
            metrics.response(failure.kind == .malformed ? failure.kind.rawValue : failure.status.map(String.init) ?? failure.kind.rawValue)
        }
    }

    /// Asks once for a page the walk will want next, in a task of its own; ``PagesAhead`` holds it until then.
    private func fetchAhead(_ edge: PollEdge, start: Timestamp, end: Timestamp?, from: Int) -> PagesAhead.Request {
        let asked = time.clock.now
        let task = Task { [client] in
            let outcome = try await client.fetch(start: start, end: end, from: from, background: edge != .live)
            // Counted as it comes back: a page asked ahead and then not read was an answer all the same.
            countResponse(outcome)
            return outcome
        }
        return PagesAhead.Request(start: start, from: from, asked: asked, task: task)
    }

    /// Requests for the pages after the one being queued, in offset order, so that during a backlog the API renders
    /// and the relay decodes the next pages while this one is routed and committed, instead of asking for each page
    /// only once the last is through. Only pages a sequential walk would ask for next: after a full page that does
    /// not end the walk, and within the query's result window.
    struct PagesAhead {
        struct Request {
            var start: Timestamp
            var from: Int
            var asked: C.Instant
            var task: Task<EventsAPIClient<C>.Outcome, any Error>
        }

        let health: SourceHealth
        private var requests: [Request] = []

        init(health: SourceHealth) { self.health = health }

        var count: Int { requests.count }

        mutating func add(_ request: Request) { requests.append(request) }

        /// The request for exactly this page, if it is the first one held; otherwise every request is dropped, as
        /// the walk has moved elsewhere (a restarted query).
        mutating func next(start: Timestamp, from: Int) -> Request? {
            guard let first = requests.first else { return nil }
            guard first.start == start, first.from == from else {
                cancelAll()
                return nil
            }
            requests.removeFirst()
            return first
        }

        /// Drops every request held, counted as unused: each was an API request, or a place in the rate limit.
        mutating func cancelAll() {
            guard !requests.isEmpty else { return }
            for request in requests { request.task.cancel() }
            health.update { [count = requests.count] in $0.pagesAskedAheadUnused += count }
            requests = []
        }
    }

    /// How many pages a backlog's walk asks for ahead of the one it queues. Over an API that takes 50 ms a page
    /// (`relay-bench drain 20000 50 1 4 50`), four took a drain from 1,900 to 7,000-7,200 events/s, with the same
    /// requests; eight gained nothing more in a drain on loopback, where the drain is bound by CPU instead.
    static var pagesAhead: Int { 4 }

    /// How many pages to ask for ahead of `page`. Pages answered out of order are safe only where the API's results
    /// no longer change: an event made visible late, between two answers, shifts every offset after it, and a page
    /// answered before that shift passes over the event the shift pushed out of the page before it. (One page at a
    /// time, the shift only brings back an event already read, which is dropped by id.) So several pages ahead only
    /// when they end, if as dense as this one, more than `lookback` and ``settledMargin`` before the API's now, and
    /// before the walk's end; otherwise one, which a walk one page at a time would ask for anyway. So too, near its
    /// end a walk asks for no page it will not read.
    func aheadDepth(after page: WalkPage, end: Timestamp?) -> Int {
        guard let first = page.events.first?.time.millisecondsSinceEpoch, let last = page.events.last?.time.millisecondsSinceEpoch
        else { return 1 }
        let (span, overflow) = (last - first).multipliedReportingOverflow(by: Int64(Self.pagesAhead))
        let (reach, beyond) = last.addingReportingOverflow(span)
        var horizon = page.apiNow.advanced(by: .zero - source.lookback - Self.settledMargin).millisecondsSinceEpoch
        if let end { horizon = min(horizon, end.millisecondsSinceEpoch) }
        return !overflow && !beyond && reach < horizon ? Self.pagesAhead : 1
    }

    /// Beyond `lookback`, how much older than the API's now the pages asked several ahead must be.
    static var settledMargin: Duration { .seconds(60) }

    /// Counts skipped events in health and metrics (the store counts them with the page) and logs each kind once.
    private func countSkipped(_ skipped: [EventPageDecoder.SkipReason: Int]) {
        guard !skipped.isEmpty else { return }
        health.update { snapshot in
            snapshot.skipped.merge(skipped, uniquingKeysWith: +)
        }
        for (reason, count) in skipped {
            metrics.skipped(reason, count)
            if health.markLogged(reason) {
                logger.warning(
                    "skipping events the relay cannot read (logged once per kind)",
                    metadata: ["reason": "\(reason.rawValue)", "count": .stringConvertible(count)])
            }
        }
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
