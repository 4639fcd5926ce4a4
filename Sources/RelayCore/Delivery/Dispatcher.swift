import CurlHTTP
import Logging
import Synchronization

/// Delivers one subscription's outbox to its webhook: up to `concurrency` requests in flight (or one at a time,
/// in event-time order, with `ordering: strict`), through the webhook's rate limit and circuit breaker, with
/// outcomes committed in groups. It never waits on the poller or on another subscription.
public final class Dispatcher<C: Clock>: Sendable where C.Duration == Duration, C: Sendable {
    private struct Job: Sendable {
        var deliveries: [Delivery]
        var ids: [Int64] { deliveries.map(\.id) }
    }

    private struct State {
        /// Requests being sent: each holds a concurrency slot.
        var sending = 0
        /// Rows read, being sent, or whose outcome is not committed yet: not to be read again as due.
        var unsettled = Set<Int64>()
        /// Due rows read ahead in one slice (batchSize 1 only), so that a freed slot does not cost a query.
        var readAhead: [Delivery] = []
    }

    /// How many due rows one read fetches ahead for single-event requests.
    private static var readAheadSlice: Int { 256 }

    private let subscription: SubscriptionConfig
    private let store: StateStore
    private let http: CurlHTTPClient
    private let writer: OutcomeWriter
    private let breaker: CircuitBreaker
    private let limiter: RateLimiter<C>?
    private let clock: C
    private let now: @Sendable () -> Timestamp
    private let logger: Logger
    private let builder: WebhookRequestBuilder
    private let policy: DeliveryPolicy
    private let state = Mutex(State())
    private let metrics: SubscriptionMetrics
    /// Signalled when rows are queued for this subscription, a request ends, or an outcome commits.
    public let wakeup = WakeupSignal()

    /// A dispatcher for `subscription`; `breaker` is shared by every subscription posting to the same URL.
    public init(
        subscription: SubscriptionConfig, store: StateStore, http: CurlHTTPClient, writer: OutcomeWriter,
        breaker: CircuitBreaker, clock: C, now: @escaping @Sendable () -> Timestamp, logger: Logger
    ) {
        self.subscription = subscription
        self.store = store
        self.http = http
        self.writer = writer
        self.breaker = breaker
        self.limiter = subscription.webhook.rateLimit.map { RateLimiter(limit: $0, clock: clock) }
        self.clock = clock
        self.now = now
        var logger = logger
        logger[metadataKey: "subscription"] = "\(subscription.name)"
        self.logger = logger
        builder = WebhookRequestBuilder(subscription: subscription)
        metrics = SubscriptionMetrics(subscription: subscription.name)
        policy = DeliveryPolicy(retry: subscription.webhook.retry)
    }

    private var slots: Int { subscription.webhook.ordering == .strict ? 1 : subscription.webhook.concurrency }

    /// Delivers until `stop` fires or the task is cancelled. After `stop`, no new request starts and the ones in
    /// flight finish and submit their outcomes; cancelling cuts them short, leaving their rows queued as they were.
    /// Throws only for the state store.
    public func run(stop: StopSignal = StopSignal()) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            while !Task.isCancelled && !stop.isFired {
                let free = slots - state.withLock { $0.sending }
                if free > 0 {
                    let jobs = try await nextJobs(max: free)
                    if !jobs.isEmpty {
                        for job in jobs {
                            state.withLock {
                                $0.sending += 1
                                $0.unsettled.formUnion(job.ids)
                            }
                            group.addTask { await self.send(job) }
                        }
                        continue
                    }
                }
                try await waitForWork(slotsFull: free <= 0, stop: stop)
            }
        }
        state.withLock { state in
            state.unsettled.subtract(state.readAhead.map(\.id))
            state.readAhead = []
        }
    }

    // MARK: - Choosing work

    private func nextJobs(max jobCount: Int) async throws -> [Job] {
        let webhook = subscription.webhook
        let strict = webhook.ordering == .strict
        let unsettled = state.withLock { $0.unsettled }
        if strict && !unsettled.isEmpty { return [] }
        let current = now()
        if !strict && webhook.batchSize == 1 {
            return try await readAheadJobs(max: jobCount, now: current, unsettled: unsettled)
        }
        var rows = try await store.deliveries(
            subscription: subscription.name, due: current, limit: jobCount * webhook.batchSize, strict: strict,
            excluding: unsettled)
        if strict {
            // The head of the line decides: nothing behind it goes first.
            guard let head = rows.first, head.nextAttemptAt <= current else { return [] }
            rows = Array(rows.prefix { $0.nextAttemptAt <= current && $0.batchID == head.batchID })
        }
        guard !rows.isEmpty else { return [] }
        if webhook.batchSize == 1 { return rows.prefix(jobCount).map { Job(deliveries: [$0]) } }

        var jobs: [Job] = []
        var composed: [String: [Delivery]] = [:]
        var loose: [Delivery] = []
        for row in rows {
            if let batch = row.batchID { composed[batch, default: []].append(row) } else { loose.append(row) }
        }
        jobs += composed.values.map { Job(deliveries: $0.sorted { ($0.eventTime, $0.id) < ($1.eventTime, $1.id) }) }
        var index = 0
        while index < loose.count && jobs.count < jobCount {
            let chunk = Array(loose[index..<min(index + webhook.batchSize, loose.count)])
            index += chunk.count
            let batchID = WebhookRequestBuilder.webhookID(subscription: subscription.name, eventIDs: chunk.map(\.eventID), batched: true)
            // Durable before the first attempt: a retry or a restart sends this same batch under this same id.
            try await store.assignBatch(batchID, to: chunk.map(\.id))
            jobs.append(Job(deliveries: chunk.map { var row = $0; row.batchID = batchID; return row }))
        }
        if strict { jobs.sort { ($0.deliveries[0].eventTime, $0.deliveries[0].id) < ($1.deliveries[0].eventTime, $1.deliveries[0].id) } }
        return Array(jobs.prefix(jobCount))
    }

    /// Single-event jobs from the read-ahead slice, refilled with one query when it runs dry.
    private func readAheadJobs(max jobCount: Int, now current: Timestamp, unsettled: Set<Int64>) async throws -> [Job] {
        var taken = state.withLock { state -> [Delivery] in
            let count = min(jobCount, state.readAhead.count)
            defer { state.readAhead.removeFirst(count) }
            return Array(state.readAhead.prefix(count))
        }
        if taken.count < jobCount {
            let fetched = try await store.deliveries(
                subscription: subscription.name, due: current, limit: Self.readAheadSlice, strict: false, excluding: unsettled)
            let needed = jobCount - taken.count
            taken += fetched.prefix(needed)
            state.withLock { state in
                state.readAhead.append(contentsOf: fetched.dropFirst(needed))
                state.unsettled.formUnion(fetched.map(\.id))
            }
        }
        return taken.map { Job(deliveries: [$0]) }
    }

    private func waitForWork(slotsFull: Bool, stop: StopSignal) async throws {
        if slotsFull {
            await wakeup.wait()
            return
        }
        let unsettled = state.withLock { $0.unsettled }
        let strict = subscription.webhook.ordering == .strict
        let pending = try await store.deliveries(
            subscription: subscription.name, due: Timestamp(millisecondsSinceEpoch: .max), limit: 1, strict: strict,
            excluding: unsettled)
        guard let next = pending.first?.nextAttemptAt, !(strict && !unsettled.isEmpty) else {
            // Nothing queued (or a strict head in flight): wait for the poller, a commit, or, once a second of real
            // time, look again for rows another process put back (`dead-letters replay`).
            try await race(until: stop) { await self.wakeup.wait() } or: { try await ContinuousClock().sleep(for: .seconds(1)) }
            return
        }
        let wait = next.millisecondsSinceEpoch - now().millisecondsSinceEpoch
        guard wait > 0 else { return }
        try await race(until: stop) { await self.wakeup.wait() } or: { [clock] in try await clock.sleep(for: .milliseconds(wait)) }
    }

    /// Returns when `first` or `second` ends, or `stop` fires, cancelling the rest.
    private func race(
        until stop: StopSignal, _ first: @escaping @Sendable () async -> Void,
        or second: @escaping @Sendable () async throws -> Void
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await first() }
            group.addTask { try await second() }
            group.addTask { await stop.wait() }
            _ = try await group.next()
            group.cancelAll()
        }
    }

    // MARK: - Sending

    private func send(_ job: Job) async {
        defer {
            state.withLock { $0.sending -= 1 }
            wakeup.signal()
        }
        do {
            try await waitForPermission()
        } catch {
            // Cancelled before sending: nothing was attempted, the rows stay due.
            state.withLock { $0.unsettled.subtract(job.ids) }
            return
        }
        let attemptedAt = now()
        let started = ContinuousClock.now
        let request = builder.request(for: job.deliveries, now: attemptedAt)
        var status: Int?
        var transportError: CurlHTTPError?
        var retryAfter: Duration?
        var snippet: [UInt8] = []
        do {
            let response = try await http.execute(request)
            status = response.status
            snippet = Array(response.body.prefix(1024))
            retryAfter = RetryAfter.parse(response.headers["retry-after"], now: now())
        } catch {
            if error.isSameKind(as: .cancelled(url: "")) || error.isSameKind(as: .shutDown(url: "")) {
                // Cut short by shutdown: not an attempt; the rows stay queued as they were.
                state.withLock { $0.unsettled.subtract(job.ids) }
                return
            }
            transportError = error
        }
        let attempts = (job.deliveries.map(\.attempts).max() ?? 0) + 1
        let firstAttemptAt = job.deliveries.compactMap(\.firstAttemptAt).min() ?? attemptedAt
        var random = SystemRandomNumberGenerator()
        let decision = policy.decide(
            status: status, transportError: transportError, retryAfter: retryAfter, attempts: attempts,
            firstAttemptAt: firstAttemptAt, now: now(), random: &random)
        recordBreaker(status: status, transportError: transportError)
        metrics.latency.recordNanoseconds(Int64((ContinuousClock.now - started) / .nanoseconds(1)))
        metrics.record(decision, events: job.deliveries.count)
        let error = transportError.map(\.shortDescription) ?? status.flatMap { (200..<300).contains($0) ? nil : "http_\($0)" }
        if case .deadLetter(let reason) = decision {
            logger.warning(
                "dead-lettered", metadata: ["events": "\(job.deliveries.count)", "first_event": "\(job.deliveries[0].eventID)",
                                            "reason": "\(reason)", "attempts": "\(attempts)"])
        }
        let outcome = DeliveryOutcome(
            deliveries: job.deliveries, decision: decision, attemptedAt: attemptedAt, status: status, error: error,
            responseSnippet: snippet)
        let ids = job.ids
        writer.submit(outcome) { [self] in
            state.withLock { $0.unsettled.subtract(ids) }
            wakeup.signal()
        }
    }

    /// The webhook's rate limit and circuit breaker; waiting here is not an attempt.
    private func waitForPermission() async throws {
        try await limiter?.acquire()
        while true {
            switch breaker.permission(now: now()) {
            case .send, .probe: return
            case .waitUntil(let time):
                let wait = time.millisecondsSinceEpoch - now().millisecondsSinceEpoch
                try await clock.sleep(for: .milliseconds(max(wait, 1)))
            }
        }
    }

    private func recordBreaker(status: Int?, transportError: CurlHTTPError?) {
        // Only trouble with the endpoint itself counts; a 4xx is an answer, not an outage.
        let endpointFailed = transportError?.isTransient == true || status.map { $0 >= 500 || $0 == 429 || $0 == 408 } == true
        guard status != nil || transportError != nil else { return }
        if let change = breaker.record(success: !endpointFailed, now: now()) {
            if case .closed = change { metrics.circuit.record(0) } else { metrics.circuit.record(1) }
            switch change {
            case .open(_, let interval):
                logger.notice("circuit open: pausing deliveries", metadata: ["probe_in": "\(interval)"])
            case .closed:
                logger.notice("circuit closed: endpoint answering again")
            case .probing:
                break
            }
        }
    }
}
