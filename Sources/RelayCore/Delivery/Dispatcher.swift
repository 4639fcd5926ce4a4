import CurlHTTP
import DequeModule
import Logging
import Synchronization

/// Delivers one subscription's outbox to its webhook: up to `concurrency` requests in flight (or one at a time,
/// in event-time order, with `ordering: strict`), through the webhook's rate limit and circuit breaker, with
/// outcomes committed in groups. It never waits on the poller or on another subscription.
public final class Dispatcher<C: Clock>: Sendable where C.Duration == Duration, C: Sendable {
    private struct Job: Sendable {
        var deliveries: [Delivery]
        /// The one request a paused subscription sends to see whether the receiver takes events again.
        var isProbe = false
        var ids: [Int64] { deliveries.map(\.id) }
    }

    private struct State {
        /// Requests being sent: each holds a concurrency slot.
        var sending = 0
        /// Rows read, being sent, or whose outcome is not committed yet: not to be read again as due.
        var unsettled = Set<Int64>()
        /// Rows the poller handed over as it queued them and, with batchSize 1, due rows read ahead in one slice,
        /// so that a freed slot does not cost a query. With batches, the loose rows new batches are composed from.
        /// A deque: a draining subscription holds up to ``handOffLimit`` rows here and takes one from the front per
        /// request, which in an array moved all the others each time (a quarter of a batch-1 drain's instructions
        /// where the dispatcher had fallen behind the poller and the list stayed full).
        var readAhead = Deque<Delivery>()
        /// Batches composed and stored before a slot was free for them (batchSize > 1, not strict): a freed slot
        /// sends the next one without waiting for a read and a write of the store.
        var composedAhead = Deque<Job>()
        /// The last read of the store found nothing due beyond what is held here: what the poller queues next
        /// may come in memory (``handOff(_:)``).
        var caughtUp = false
        /// When the store is read even with rows in hand, so that retries falling due are not kept waiting
        /// behind a stream of handed-over rows.
        var nextStoreRead = Timestamp(millisecondsSinceEpoch: 0)
        /// A read of queued rows is running: rows handed over now might be in it too.
        var storeReadRunning = false
        /// Rows were refused while that read ran: committed after it began, they may not be in it, so it cannot
        /// say the dispatcher is caught up.
        var refusedDuringRead = false
        /// The newest event row a finished read of queued rows could see: a row handed over late (its commit's
        /// hand-over comes after that read, which may have sent it already) is at or below it.
        var storeReadThrough: Int64 = 0
        /// Where the next read of never-attempted rows starts: each one before it was read and is held here, or
        /// gone, but for rows queued by another process. Rows the poller queues later lower it (``handOff(_:)``);
        /// nil (read from the queue's head) once rows held go back to the store unsent.
        var queuedFrom: StateStore.QueuedKey?
        /// The first of the rows the poller queued while a read ran: that read may not have seen them.
        var queuedDuringRead: StateStore.QueuedKey?
        /// Times rows held went back to the store unsent: a read that began before one cannot say where the next
        /// starts (it left out a row that is due again).
        var releases = 0
        /// When a read next starts from the queue's head whatever `queuedFrom` says, for rows queued by another
        /// process (`dead-letters replay`).
        var nextReadFromHead = Timestamp(millisecondsSinceEpoch: 0)
        /// Dead letters in a row with no success between them, towards `pauseAfter`.
        var consecutiveDeadLetters = 0
        /// Set while paused after repeated dead letters, with when the next probe may go.
        var pause: (pause: SubscriptionPause, nextProbe: Timestamp)?
        /// The one request a paused subscription sends, while it is out.
        var probeInFlight = false
        /// Whether the pause is in the store yet: only then does its absence there mean `resume` lifted it.
        var pauseStored = false
        /// Strict only: the rows of a head that failed, until its new schedule is committed (the head is not known
        /// before then).
        var failedHead: [Int64]?
        /// When to look next for rows past `maxAge`.
        var nextExpiry = Timestamp(millisecondsSinceEpoch: 0)
        /// Requests started with a completion rather than a task, by token, so that a cancel can reach them.
        var started: [Int: CurlHTTPClient.PreparedRequest] = [:]
        var nextToken = 0
        /// Waiting for the started requests to end.
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
        /// The run was cancelled (started requests are being aborted) or failed: none may start after this.
        var cancelling = false
        /// Reads of the queue so far (``readQueued(limit:now:retriesOnly:)``), for tests of when it reads.
        var queueReads = 0

        /// Takes up to `count` of the rows in hand, in the order they are held.
        mutating func takeInHand(_ count: Int) -> [Delivery] {
            let taken = Array(readAhead.prefix(count))
            readAhead.removeFirst(taken.count)
            return taken
        }

        /// Lets go of the rows held for a request that has not started: read ahead, or in batches composed ahead
        /// (those stay stored as composed, and are read back whole).
        mutating func releaseHeld() {
            forgetQueuedFrom()
            unsettled.subtract(readAhead.map(\.id))
            readAhead = []
            for job in composedAhead { unsettled.subtract(job.ids) }
            composedAhead = []
        }

        /// Lets go of a job that was not attempted (stopped, or cut short, before an answer): its rows stay due as
        /// they were, and a probe is not out any more (a later run would otherwise wait for its outcome for ever).
        mutating func releaseUnattempted(_ job: Job) {
            forgetQueuedFrom()
            unsettled.subtract(job.ids)
            if job.isProbe { probeInFlight = false }
        }

        /// Rows held go back to the store unsent: the next read starts from the queue's head, and the dispatcher is
        /// not caught up (those rows are there to send).
        mutating func forgetQueuedFrom() {
            queuedFrom = nil
            releases += 1
            caughtUp = false
        }

        /// Rows were queued in the store and not taken in hand: the next read must reach them.
        mutating func leftInStore(_ rows: some Sequence<Delivery>) {
            guard let first = rows.lazy.map(StateStore.QueuedKey.init).min() else { return }
            if storeReadRunning {
                queuedDuringRead = min(queuedDuringRead ?? first, first)
            } else if let from = queuedFrom {
                queuedFrom = min(from, first)
            }
        }
    }

    /// Reads of the queue so far, beyond the one-row look for the next due time while idle.
    var queueReads: Int { state.withLock { $0.queueReads } }

    /// Requests being sent now (what `/metrics` reports as `requests_in_flight` when scraped).
    public var requestsInFlight: Int { state.withLock { $0.sending } }

    /// How often a paused subscription sends one queued event to see whether the receiver takes it again.
    public static var probeInterval: Duration { .seconds(300) }

    /// How many due rows one read fetches ahead for single-event requests.
    private static var readAheadSlice: Int { 256 }

    /// How many batches are composed ahead of a free slot, at most. Each round of composing costs a read and a
    /// commit behind the poller's, a few milliseconds on a busy writer, so it composes enough to keep every place
    /// busy until the next: up to 16 batches of at most 1,000 rows in all, and never fewer than one per place up to 4.
    private var batchesAhead: Int { max(min(planner.slots, 4), min(16, 1_000 / planner.batchSize)) }

    /// At most this many rows are held in memory; beyond it, rows wait in the store. With batches, four commits' worth
    /// (a commit hands over up to ten pages at once): a dispatcher still composing one commit's rows takes the next
    /// in hand too. With room for about one, it refused the next, was no longer caught up, and read the following
    /// commits back from the store: five subscriptions draining a backlog read 60% of their rows that way. At most
    /// about 2 MB of deliveries a subscription, whose payloads the subscriptions share.
    private var handOffLimit: Int { planner.batchSize > 1 ? 4_096 : 1_024 }

    /// The subscription's name.
    public var name: String { subscription.name }

    /// Takes rows the poller has just queued (committed) for this subscription, when it is caught up and is not
    /// strict or paused: they are sent, or composed into batches, without reading them back from the store.
    /// Otherwise the rows are left to be read from the store as usual.
    /// Returns how many it took (rows a read of the store could see are left to the store), nil if it takes none
    /// now.
    @discardableResult
    public func handOff(_ rows: [Delivery]) -> Int? {
        guard !planner.strict else { return nil }
        return state.withLock { state -> Int? in
            guard state.caughtUp, !state.storeReadRunning, state.pause == nil,
                state.readAhead.count + rows.count <= handOffLimit
            else {
                state.caughtUp = false
                if state.storeReadRunning, !rows.isEmpty { state.refusedDuringRead = true }
                state.leftInStore(rows)
                return nil
            }
            // Rows a read could see are the store's to give: that read may have sent them already.
            let fresh = rows.filter { $0.id > state.storeReadThrough && !state.unsettled.contains($0.id) }
            let (through, unsettled) = (state.storeReadThrough, state.unsettled)
            state.leftInStore(rows.lazy.filter { $0.id <= through && !unsettled.contains($0.id) })
            state.readAhead.append(contentsOf: fresh)
            state.unsettled.formUnion(fresh.map(\.id))
            return fresh.count
        }
    }

    private let subscription: SubscriptionConfig
    private let store: StateStore
    private let http: CurlHTTPClient
    private let writer: OutcomeWriter
    private let breaker: CircuitBreaker
    private let flow: FlowControl
    private let progress: ProgressMonitor?
    /// ``WebhookRequestBuilder/fingerprint(of:)`` of this subscription's webhook, stored with a pause.
    private let webhookFingerprint: String
    private let limiter: RateLimiter<C>?
    private let time: RelayTime<C>
    private var now: @Sendable () -> Timestamp { time.now }
    private let logger: Logger
    private let builder: WebhookRequestBuilder
    private let policy: DeliveryPolicy
    private let planner: DeliveryPlanner
    private let state = Mutex(State())
    private let metrics: SubscriptionMetrics
    /// Signalled when rows are queued for this subscription, a request ends, or an outcome commits.
    public let wakeup = WakeupSignal()

    /// A dispatcher for `subscription`; `breaker` and `flow` are shared by every subscription posting to the same URL.
    public init(
        subscription: SubscriptionConfig, store: StateStore, http: CurlHTTPClient, writer: OutcomeWriter,
        breaker: CircuitBreaker, flow: FlowControl = FlowControl(), time: RelayTime<C>,
        logger: Logger, progress: ProgressMonitor? = nil
    ) {
        self.progress = progress
        self.subscription = subscription
        self.store = store
        self.http = http
        self.writer = writer
        self.breaker = breaker
        self.flow = flow
        webhookFingerprint = WebhookRequestBuilder.fingerprint(of: subscription.webhook)
        self.limiter = subscription.webhook.rateLimit.map { RateLimiter(limit: $0, clock: time.clock) }
        self.time = time
        var logger = logger
        logger[metadataKey: "subscription"] = "\(subscription.name)"
        self.logger = logger
        builder = WebhookRequestBuilder(subscription: subscription)
        metrics = SubscriptionMetrics(subscription: subscription.name)
        policy = DeliveryPolicy(retry: subscription.webhook.retry)
        planner = DeliveryPlanner(subscription)
    }

    /// Delivers until `stop` fires or the task is cancelled. After `stop`, no new request starts and the ones in
    /// flight finish and submit their outcomes; cancelling cuts them short, leaving their rows queued as they were.
    /// Throws only for the state store.
    public func run(stop: StopSignal = StopSignal()) async throws {
        // A run cancelled before this one aborted what it had started; this one starts afresh, reading from the
        // queue's head.
        state.withLock { state in
            state.cancelling = false
            state.forgetQueuedFrom()
        }
        // A cancel is seen at once by the HTTP client's thread, which starts the next row in hand without the loop:
        // waiting for the loop to notice it would let that chain go on for as long as the loop takes to be
        // scheduled.
        try await withTaskCancellationHandler {
            try await deliver(stop: stop)
        } onCancel: {
            abortStarted()
        }
    }

    private func deliver(stop: StopSignal) async throws {
        try await loadPause()
        do {
            try await deliverUntilStopped(stop: stop)
        } catch {
            // A store that failed ends the run: nothing in hand starts from a completion after it.
            state.withLock { state in
                state.cancelling = true
                state.releaseHeld()
            }
            throw error
        }
        await drainStarted()
        state.withLock { $0.releaseHeld() }
    }

    private func deliverUntilStopped(stop: StopSignal) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            while !Task.isCancelled && !stop.isFired {
                try await expireOldRowsWhenDue()
                let free = planner.slots - state.withLock { $0.sending }
                if free > 0 {
                    let jobs = try await nextJobs(max: free)
                    if !jobs.isEmpty {
                        for job in jobs {
                            state.withLock {
                                $0.sending += 1
                                $0.unsettled.formUnion(job.ids)
                            }
                            // A task only when the request has to wait for a permission first.
                            if !startNow(job, stop: stop) { group.addTask { await self.send(job, stop: stop) } }
                        }
                        continue
                    }
                }
                if free <= 0, try await composeAheadWhileBusy() { continue }
                try await waitForWork(slotsFull: free <= 0, stop: stop)
            }
        }
    }

    /// Waits for the requests started with a completion to end (a cancel of ``run(stop:)`` has aborted them).
    private func drainStarted() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                guard !state.started.isEmpty else { return true }
                state.drainWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Aborts the requests started with a completion and every one started after this (their rows stay queued).
    private func abortStarted() {
        let started = state.withLock { state in
            state.cancelling = true
            return Array(state.started.values)
        }
        for request in started { request.cancel() }
    }

    // MARK: - Choosing work

    private func nextJobs(max wanted: Int) async throws -> [Job] {
        // Paused: one probe at a time, one every ``probeInterval``.
        let probeDue = state.withLock { state -> Bool? in
            guard let pause = state.pause else { return nil }
            return !state.probeInFlight && now() >= pause.nextProbe
        }
        if probeDue == false { return [] }
        var jobs = try await progress.step("subscription \(subscription.name)") { try await self.jobs(max: probeDue == true ? 1 : wanted) }
        if probeDue == true, !jobs.isEmpty {
            jobs[0].isProbe = true
            state.withLock { state in
                state.probeInFlight = true
                state.pause?.nextProbe = now().advanced(by: Self.probeInterval)
            }
        }
        return jobs
    }

    private func jobs(max jobCount: Int) async throws -> [Job] {
        let inFlight = state.withLock {
            DeliveryPlanner.InFlight(requests: $0.sending, unsettled: $0.unsettled, failedHeadPending: $0.failedHead != nil)
        }
        let count = min(jobCount, planner.freeSlots(inFlight))
        guard count > 0 else { return [] }
        let current = now()
        if !planner.strict && planner.batchSize == 1 {
            return try await readAheadJobs(max: count, now: current)
        }
        if !planner.strict { return try await batchJobs(max: count, now: current) }
        let rows = try await store.deliveries(
            subscription: subscription.name, due: current, limit: planner.rowsToRead(for: count), strict: planner.strict,
            excluding: inFlight.unsettled)
        let requests = planner.plan(rows, inFlight: inFlight, now: current, wanted: count)
        // Stored before the first attempt, so that a retry or a restart sends these members, in this order, under this id.
        try await store.assignBatches(requests.compactMap { request in request.composedBatch.map { ($0, request.deliveries) } })
        return requests.map { Job(deliveries: $0.deliveries) }
    }

    /// Batch jobs: those composed ahead first, without touching the store; then new ones, read and stored.
    private func batchJobs(max jobCount: Int, now current: Timestamp) async throws -> [Job] {
        let taken = state.withLock { state -> [Job] in
            let count = min(jobCount, state.composedAhead.count)
            defer { state.composedAhead.removeFirst(count) }
            return Array(state.composedAhead.prefix(count))
        }
        guard taken.count < jobCount else { return taken }
        return taken + (try await composeBatches(sending: jobCount - taken.count, alsoSending: taken.count, now: current))
    }

    /// Reads and stores up to `wanted` batches to send now, and up to ``batchesAhead`` full ones more, kept for the
    /// next slots to free: a request that ends then does not leave its slot idle while the next batch is read and
    /// stored. Returns the ones to send now.
    private func composeBatches(sending wanted: Int, alsoSending: Int = 0, now current: Timestamp) async throws -> [Job] {
        let (inFlight, ahead) = state.withLock { state in
            (DeliveryPlanner.InFlight(requests: state.sending + alsoSending, unsettled: state.unsettled),
             state.pause == nil ? batchesAhead - state.composedAhead.count : 0)
        }
        guard wanted > 0 || ahead > 0 else { return [] }
        let (rows, held) = try await rowsToCompose(
            limit: planner.rowsToRead(for: wanted + max(ahead, 0)), now: current)
        var planning = inFlight
        planning.unsettled.subtract(held)
        let requests = planner.plan(rows, inFlight: planning, now: current, wanted: wanted, ahead: ahead)
        let planned = Set(requests.flatMap { $0.deliveries.map(\.id) })
        // Rows in hand that no request took stay in hand, ahead of any handed over meanwhile.
        let unused = rows.filter { held.contains($0.id) && !planned.contains($0.id) }
        if !unused.isEmpty { state.withLock { $0.readAhead.prepend(contentsOf: unused) } }
        // Rows read from the store that no request took stay there: the next read must reach them.
        let left = rows.lazy.filter { !held.contains($0.id) && !planned.contains($0.id) && $0.attempts == 0 }
            .map(StateStore.QueuedKey.init)
        if let low = left.min() { state.withLock { $0.queuedFrom = $0.queuedFrom.map { min($0, low) } } }
        do {
            // Stored before the first attempt, so that a retry or a restart sends these members, in this order, under
            // this id.
            try await store.assignBatches(
                requests.compactMap { request in request.composedBatch.map { ($0, request.deliveries) } })
        } catch {
            // Not sent: the rows taken from those in hand are the store's again.
            state.withLock { state in
                state.unsettled.subtract(held.intersection(planned))
                state.forgetQueuedFrom()
            }
            throw error
        }
        let jobs = requests.map { Job(deliveries: $0.deliveries) }
        let sending = min(wanted, jobs.count)
        state.withLock { state in
            for job in jobs[sending...] { state.unsettled.formUnion(job.ids) }
            state.composedAhead.append(contentsOf: jobs[sending...])
        }
        return Array(jobs[..<sending])
    }

    /// With every slot busy, composes batches ahead for the next ones to free; true if it composed any.
    private func composeAheadWhileBusy() async throws -> Bool {
        guard planner.batchSize > 1, !planner.strict,
            state.withLock({ $0.pause == nil && $0.composedAhead.count < batchesAhead })
        else { return false }
        let before = state.withLock { $0.composedAhead.count }
        _ = try await progress.step("subscription \(subscription.name)") { try await self.composeBatches(sending: 0, now: self.now()) }
        return state.withLock { $0.composedAhead.count } > before
    }

    /// Single-event jobs from the read-ahead slice (and rows handed over), refilled with one query when it runs
    /// dry and is not caught up. Retries are looked for at least once a second whatever it holds: a stream of
    /// handed-over rows must not keep them waiting.
    private func readAheadJobs(max jobCount: Int, now current: Timestamp) async throws -> [Job] {
        var (taken, retriesDue, headDue, caughtUp) = state.withLock {
            ($0.takeInHand(jobCount), current >= $0.nextStoreRead, current >= $0.nextReadFromHead, $0.caughtUp)
        }
        let dry = taken.count < jobCount
        // Caught up, there is nothing in the store to read beyond retries (as ``rowsToCompose(limit:now:)``).
        guard (dry && !caughtUp) || retriesDue || headDue else { return taken.map { Job(deliveries: [$0]) } }
        // Dry, or a look from the head due: due rows, after those held; otherwise only retries are read.
        let fetched = try await readQueued(limit: Self.readAheadSlice, now: current, retriesOnly: !dry && !headDue)
        state.withLock { state in
            // Rows handed over while the read ran are held already.
            let fresh = fetched.filter { !state.unsettled.contains($0.id) }
            state.unsettled.formUnion(fresh.map(\.id))
            // Read from the store, they go first: due retries among them have waited longest.
            state.readAhead.prepend(contentsOf: fresh)
            taken += state.takeInHand(jobCount - taken.count)
        }
        return taken.map { Job(deliveries: [$0]) }
    }

    /// Rows to compose batches from, with the ids of those taken from the rows in hand (already unsettled). Rows in
    /// hand alone while there are any and no read of retries or from the head is due; none while caught up: the store
    /// holds nothing else to send (a commit whose rows are not handed over ends that). Otherwise the store is read,
    /// due retries first, with what is in hand after them.
    private func rowsToCompose(
        limit: Int, now current: Timestamp
    ) async throws -> ([Delivery], Set<Int64>) {
        let (inHand, retriesDue, headDue, caughtUp) = state.withLock {
            ($0.takeInHand(limit), current >= $0.nextStoreRead, current >= $0.nextReadFromHead, $0.caughtUp)
        }
        let held = Set(inHand.map(\.id))
        // Reading anyway found nothing, at the cost of a read; and a commit handed over while that read ran was
        // refused, after which the dispatcher read commit after commit back from the store.
        guard (inHand.isEmpty && !caughtUp) || retriesDue || headDue else { return (inHand, held) }
        let fetched: [Delivery]
        do {
            fetched = try await readQueued(limit: limit, now: current, retriesOnly: !inHand.isEmpty && !headDue)
        } catch {
            state.withLock { $0.readAhead.prepend(contentsOf: inHand) }
            throw error
        }
        return (fetched.filter { !held.contains($0.id) } + inHand, held)
    }

    /// Reads due rows from the store, leaving out those held here. A full read (not `retriesOnly`) says whether the
    /// dispatcher is caught up, and which rows handed over later it may have seen (``handOff(_:)``); it starts where
    /// the last one left off (rows the poller queued since lower that), and from the queue's head at least once a
    /// second, for rows another process queued.
    private func readQueued(limit: Int, now current: Timestamp, retriesOnly: Bool) async throws -> [Delivery] {
        let (excluding, from, releases) = state.withLock { state in
            state.queueReads += 1
            if !retriesOnly {
                state.storeReadRunning = true
                state.refusedDuringRead = false
                state.queuedDuringRead = nil
            }
            guard !retriesOnly, current < state.nextReadFromHead else {
                if !retriesOnly { state.nextReadFromHead = current.advanced(by: .seconds(1)) }
                return (state.unsettled, nil as StateStore.QueuedKey?, state.releases)
            }
            return (state.unsettled, state.queuedFrom, state.releases)
        }
        let read: StateStore.QueueRead
        do {
            read = try await store.readQueue(
                subscription: subscription.name, due: current, limit: limit, strict: false, excluding: excluding,
                retriesOnly: retriesOnly, queuedFrom: from)
        } catch {
            if !retriesOnly { state.withLock { $0.storeReadRunning = false } }
            throw error
        }
        state.withLock { state in
            if !retriesOnly {
                // A read cut short by its bound did not reach the queue's end, whatever it found.
                state.caughtUp = read.rows.count < limit && !read.cutShort && !state.refusedDuringRead
                state.storeReadRunning = false
                state.storeReadThrough = max(state.storeReadThrough, read.newestEvent)
                // Rows that went back to the store during the read may lie before where it says to go on, and rows
                // queued during it may be missing from it.
                let next = [read.queuedFrom, state.queuedDuringRead].compactMap { $0 }.min()
                state.queuedFrom = state.releases == releases ? next : nil
            }
            state.nextStoreRead = current.advanced(by: .seconds(1))
        }
        return read.rows
    }

    private func waitForWork(slotsFull: Bool, stop: StopSignal) async throws {
        if slotsFull {
            await wakeup.wait()
            return
        }
        if let nextProbe = state.withLock({ $0.pause?.nextProbe }) {
            // Paused: wake for the next probe, and once a second to see whether `resume` lifted the pause.
            try await race(until: stop) { await self.wakeup.wait() } or: { [time] in try await time.sleep(until: nextProbe, atMost: .seconds(1)) }
            // Only a pause stored before the read can have been lifted by `resume`: one stored while the read ran
            // would read as absent.
            let stored = state.withLock { $0.pause != nil && $0.pauseStored }
            if stored, try await store.pause(of: subscription.name) == nil, state.withLock({ $0.pause != nil }) {
                await resume(because: "resumed by command")
            }
            return
        }
        let unsettled = state.withLock { $0.unsettled }
        let strict = subscription.webhook.ordering == .strict
        let pending = try await store.deliveries(
            subscription: subscription.name, due: Timestamp(millisecondsSinceEpoch: .max), limit: 1, strict: strict,
            excluding: unsettled)
        guard let first = pending.first, !(strict && state.withLock({ $0.failedHead != nil })) else {
            // Nothing queued (or a strict head in flight, or held while it joins the shared poll): wait for the
            // poller, a commit, or, once a second, look again for rows another process put back.
            try await race(until: stop) { await self.wakeup.wait() } or: { [time] in try await time.sleep(for: .seconds(1)) }
            return
        }
        let wait = first.nextAttemptAt.millisecondsSinceEpoch - now().millisecondsSinceEpoch
        guard wait > 0 else {
            let headRead = state.withLock { state -> Timestamp? in
                // The poller committed it and handed it over while this looked.
                if state.unsettled.contains(first.id) { return nil }
                // Committed since the last read, which was caught up: the poller's, whose hand-over follows its commit
                // (forgetting here refused that hand-over, and the dispatcher read the commit back). One queued by
                // another process waits for the read from the queue's head, at most a second.
                if state.caughtUp, first.id > state.storeReadThrough { return state.nextReadFromHead }
                // Due, and not read: queued before where reads go on, by another process. The next read starts at
                // the head.
                state.forgetQueuedFrom()
                return nil
            }
            if let headRead {
                try await race(until: stop) { await self.wakeup.wait() } or: { [time] in
                    try await time.sleep(until: headRead, atMost: .seconds(1))
                }
            }
            return
        }
        try await race(until: stop) { await self.wakeup.wait() } or: { [time] in try await time.sleep(for: .milliseconds(wait)) }
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

    /// Sends a job at once, without a task, when nothing makes it wait: no rate limit of its own, no pause, a
    /// place free with the URL's flow control, the breaker letting it go. Its outcome is handled on the HTTP
    /// client's thread as the response arrives. False when it has to wait (``send(_:stop:)`` does that).
    private func startNow(_ job: Job, stop: StopSignal) -> Bool {
        guard limiter == nil, !job.isProbe, !stop.isFired, !Task.isCancelled, state.withLock({ $0.pause == nil }) else { return false }
        let current = now()
        guard flow.pause(at: current) == nil, flow.tryEnter() else { return false }
        switch breaker.permission(now: current) {
        case .send, .probe: break
        case .waitUntil:
            flow.leave()
            return false
        }
        let started = ContinuousClock.now
        let prepared: CurlHTTPClient.PreparedRequest
        do {
            prepared = try http.prepare(builder.request(for: job.deliveries, now: current))
        } catch {
            flow.leave()
            let step = conclude(job, .failure(error), attemptedAt: current, started: started)
            finishStarted(token: nil, step: step)
            return true
        }
        let (token, cancelling) = state.withLock { state -> (Int, Bool) in
            state.nextToken += 1
            state.started[state.nextToken] = prepared
            return (state.nextToken, state.cancelling)
        }
        defer { if cancelling { prepared.cancel() } }
        prepared.start { [self] result in
            flow.leave()
            let step = conclude(job, result, attemptedAt: current, started: started)
            // The freed place goes to the next row in hand, from here: waking the loop for it would cost two
            // thread hand-overs per event. Started before this one is finished, so that a stop's drain never
            // sees an empty moment between them.
            let chained = step.isNone && startNextInHand(stop: stop)
            // A batch taken from those composed ahead still wakes the loop, which composes the next.
            finishStarted(token: token, step: step, wakeLoop: !chained || planner.batchSize > 1)
        }
        return true
    }

    /// Starts the next row read ahead (or handed over), or the next batch composed ahead, when the loop would have
    /// started it at once anyway: not strict, nothing paused or stopping, no retry read due (single events). False
    /// when it started none.
    private func startNextInHand(stop: StopSignal) -> Bool {
        guard !planner.strict, limiter == nil, !stop.isFired else { return false }
        if planner.batchSize > 1 { return startNextComposed(stop: stop) }
        let current = now()
        let next = state.withLock { state -> Delivery? in
            guard state.pause == nil, !state.cancelling, current < state.nextStoreRead, !state.readAhead.isEmpty else { return nil }
            state.sending += 1
            return state.readAhead.removeFirst()
        }
        guard let next else { return false }
        if startNow(Job(deliveries: [next]), stop: stop) { return true }
        // It has to wait (flow control, the breaker): the loop sends it, with a task.
        state.withLock { state in
            state.sending -= 1
            state.readAhead.prepend(next)
        }
        return false
    }

    /// Starts the next batch composed ahead, as ``startNextInHand(stop:)`` does a single row.
    private func startNextComposed(stop: StopSignal) -> Bool {
        let next = state.withLock { state -> Job? in
            guard state.pause == nil, !state.cancelling, !state.composedAhead.isEmpty else { return nil }
            state.sending += 1
            return state.composedAhead.removeFirst()
        }
        guard let next else { return false }
        if startNow(next, stop: stop) { return true }
        state.withLock { state in
            state.sending -= 1
            state.composedAhead.prepend(next)
        }
        return false
    }

    private func finishStarted(token: Int?, step: PauseStep, wakeLoop: Bool = true) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.sending -= 1
            if let token { state.started[token] = nil }
            guard state.started.isEmpty else { return [] }
            defer { state.drainWaiters = [] }
            return state.drainWaiters
        }
        if !step.isNone { Task { await self.apply(step) } }
        if wakeLoop { wakeup.signal() }
        for waiter in waiters { waiter.resume() }
    }

    private func send(_ job: Job, stop: StopSignal) async {
        defer {
            state.withLock { $0.sending -= 1 }
            wakeup.signal()
        }
        // Waiting for the rate limit, a Retry-After or a breaker probe is not "in flight": a stop ends it at once.
        guard await waitForPermission(until: stop) else {
            // Nothing was attempted: the rows stay due.
            state.withLock { $0.releaseUnattempted(job) }
            return
        }
        defer { flow.leave() }
        // Paused while this waited: only the probe goes.
        if !job.isProbe, state.withLock({ $0.pause != nil }) {
            state.withLock { $0.releaseUnattempted(job) }
            return
        }
        let attemptedAt = now()
        // Latency is the receiver's, in real time whatever clock the relay waits on.
        let started = ContinuousClock.now
        let result: Result<HTTPResponse, CurlHTTPError>
        do {
            result = .success(try await http.execute(builder.request(for: job.deliveries, now: attemptedAt)))
        } catch {
            result = .failure(error)
        }
        await apply(conclude(job, result, attemptedAt: attemptedAt, started: started))
    }

    /// Decides what a response (or its failure) means for the job's rows, records it, and submits the outcome;
    /// returns what it does to the pause, for the caller to carry out. Synchronous: it runs on the HTTP client's
    /// thread for jobs started with ``startNow(_:stop:)``.
    private func conclude(
        _ job: Job, _ result: Result<HTTPResponse, CurlHTTPError>, attemptedAt: Timestamp, started: ContinuousClock.Instant
    ) -> PauseStep {
        if case .failure(let error) = result, error.code == .cancelled || error.code == .shutDown {
            // Cut short by shutdown: not an attempt.
            state.withLock { $0.releaseUnattempted(job) }
            return .none
        }
        let decidedAt = now()
        let answer = WebhookAnswer(result, now: decidedAt)
        let (status, transportError, retryAfter, snippet) = (answer.status, answer.transportError, answer.retryAfter, answer.snippet)
        let attempts = (job.deliveries.map(\.attempts).max() ?? 0) + 1
        let queuedAt = job.deliveries.map(\.queuedAt).min() ?? attemptedAt
        var random = SystemRandomNumberGenerator()
        let (decision, step) = countTowardsPause(
            policy.decide(
                status: status, transportError: transportError, retryAfter: retryAfter, attempts: attempts,
                queuedAt: queuedAt, now: decidedAt, random: &random),
            events: job.deliveries.count, probe: job.isProbe)
        recordEndpoint(answer)
        metrics.latency.recordNanoseconds(Int64((ContinuousClock.now - started) / .nanoseconds(1)))
        metrics.record(decision, events: job.deliveries.count)
        let error = answer.errorText
        logger.trace(
            "request done",
            metadata: RequestLogLine.metadata(
                job.deliveries, attempt: attempts, took: ContinuousClock.now - started, outcome: decision, status: status,
                transportError: transportError))
        if case .deadLetter(let reason) = decision {
            logger.warning(
                "dead-lettered", metadata: ["events": .stringConvertible(job.deliveries.count), "first_event": "\(job.deliveries[0].eventID)",
                                            "reason": "\(reason)", "attempts": .stringConvertible(attempts)])
        }
        let outcome = DeliveryOutcome(
            deliveries: job.deliveries, decision: decision, attemptedAt: attemptedAt, decidedAt: decidedAt, status: status, error: error,
            responseSnippet: snippet)
        let ids = job.ids
        if subscription.webhook.ordering == .strict, decision != .delivered { state.withLock { $0.failedHead = ids } }
        writer.submit(outcome) { [self] in
            let slotsFull = state.withLock { state -> Bool in
                state.unsettled.subtract(ids)
                if state.failedHead == ids { state.failedHead = nil }
                return state.sending >= planner.slots
            }
            // With every place taken the loop has nothing to start: the next request to end without a successor
            // wakes it. Waking it for each committed outcome cost a loop turn per event.
            if !slotsFull || planner.strict { wakeup.signal() }
        }
        return step
    }

    /// How a request ended, for its log line: `status`, a number a log query can compare, when the receiver
    /// answered; else `error`, the transport failure. One field mixing both would be a string for every line.
    /// Waits for the webhook's rate limit, its flow control and its circuit breaker, and takes an in-flight place
    /// with the URL's flow control; false when `stop` fired (or the task was cancelled) first, holding no place.
    /// Waiting here is not an attempt.
    private func waitForPermission(until stop: StopSignal) async -> Bool {
        guard !stop.isFired else { return false }
        // The usual case, without tasks: no rate limit of its own, no pause, a place free, the breaker letting it go.
        let current = now()
        if limiter == nil, flow.pause(at: current) == nil, flow.tryEnter() {
            switch breaker.permission(now: current) {
            case .send, .probe: return true
            case .waitUntil: flow.leave()
            }
        }
        return await withTaskGroup(of: Bool?.self) { group in
            group.addTask { (try? await self.waitForPermission()) ?? false }
            group.addTask {
                await stop.wait()
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            if let granted = first { return granted }
            // Stopped: the permission may have come at the same moment; give its place back.
            if case let late?? = await group.next(), late { flow.leave() }
            return false
        }
    }

    /// Flow control first (a pause, then an in-flight place), the breaker last, so that a probe it grants is sent.
    private func waitForPermission() async throws -> Bool {
        try await limiter?.acquire()
        while true {
            if let until = flow.pause(at: now()) {
                try await time.sleep(until: until)
                continue
            }
            guard await flow.enter() else { throw CancellationError() }
            if flow.pause(at: now()) != nil {
                // A Retry-After arrived while this waited for its place.
                flow.leave()
                continue
            }
            switch breaker.permission(now: now()) {
            case .send, .probe: return true
            case .waitUntil(let time):
                flow.leave()
                try await self.time.sleep(until: time)
            }
        }
    }

    // MARK: - Aging

    /// How often rows past `maxAge` are looked for.
    public static var expiryInterval: Duration { .seconds(60) }

    /// How long past `maxAge` a row may wait for its last try before the sweep gives it up: two of the breaker's
    /// longest probe intervals, so that an endpoint that comes back by the deadline is probed, and its rows sent,
    /// first.
    public static var expiryGrace: Duration { .seconds(600) }

    /// At most once an ``expiryInterval``, dead-letters the rows queued more than `maxAge` plus ``expiryGrace``
    /// ago: rows held back by an open breaker or flow control never reach an attempt that would age them out, and
    /// would otherwise wait forever. Checked whenever the dispatcher wakes, which it does at least once per breaker
    /// probe or `Retry-After`, rather than on a timer of its own. Not while paused: a paused subscription
    /// dead-letters nothing.
    private func expireOldRowsWhenDue() async throws {
        let current = now()
        let due = state.withLock { state -> Bool in
            guard state.pause == nil, current >= state.nextExpiry else { return false }
            state.nextExpiry = current.advanced(by: Self.expiryInterval)
            return true
        }
        guard due else { return }
        let before = current.advanced(by: .zero - subscription.webhook.retry.maxAge - Self.expiryGrace)
        var expired = 0
        // Rows read ahead or in batches composed ahead are not carried by a request: they may go, and are read
        // again if they stay (a batch's rows as composed).
        let carried = state.withLock { state -> Set<Int64> in
            state.releaseHeld()
            state.caughtUp = false
            return state.unsettled
        }
        while true {
            let count = try await progress.step("subscription \(subscription.name)") {
                try await self.store.expire(subscription: self.subscription.name, queuedBefore: before, excluding: carried, now: current)
            }
            expired += count
            if count < 10_000 { break }
        }
        guard expired > 0 else { return }
        metrics.record(.deadLetter(reason: "max_age"), events: expired)
        logger.warning("dead-lettered events queued longer than maxAge", metadata: [
            "events": .stringConvertible(expired), "max_age_s": .stringConvertible(LogSeconds(subscription.webhook.retry.maxAge))])
    }

    // MARK: - Pausing after repeated dead letters

    /// Takes up the pause stored by an earlier run, unless the webhook changed since (a reload that changes it
    /// resumes the subscription).
    private func loadPause() async throws {
        guard let stored = try await store.pause(of: subscription.name) else { return }
        guard stored.webhook == webhookFingerprint else {
            try await store.resume(subscription.name)
            logger.notice("resumed: the webhook changed", metadata: ["was": "\(stored.reason)"])
            return
        }
        // The probe schedule carries on from the pause, or from this dispatcher's last probe when it is run again
        // under the same pause: a restart does not probe early.
        state.withLock { state in
            let fromPause = stored.since.advanced(by: Self.probeInterval)
            let held = state.pause.flatMap { $0.pause == stored ? $0.nextProbe : nil }
            state.pause = (stored, max(fromPause, held ?? fromPause))
            state.pauseStored = true
        }
        metrics.paused.record(1)
        logger.warning("\(stored.reason); one queued event probes every 5 minutes", metadata: ["since": "\(stored.since.iso8601)"])
    }

    /// Counts a decision towards `pauseAfter`, pausing when it is reached; while paused, nothing is dead-lettered (a
    /// failed probe stays queued for the next one) and a delivery resumes. The pause is in force at once; storing
    /// it (or the resume) is the returned step, for ``apply(_:)``.
    private func countTowardsPause(
        _ decision: DeliveryOutcome.Decision, events: Int, probe: Bool
    ) -> (DeliveryOutcome.Decision, PauseStep) {
        let pauseAfter = subscription.webhook.pauseAfter
        let (fingerprint, current) = (webhookFingerprint, now())
        return state.withLock { state -> (DeliveryOutcome.Decision, PauseStep) in
            // Only the probe's own answer ends it: a request sent before the pause may be answered while it is out.
            if probe { state.probeInFlight = false }
            switch decision {
            case .delivered:
                state.consecutiveDeadLetters = 0
                return (decision, state.pause == nil ? .none : .resume)
            case .retry:
                return (decision, .none)
            case .deadLetter(let reason):
                // Due at once: only a probe sends it while paused, and it goes first when the pause lifts.
                if state.pause != nil { return (.retry(at: current), .none) }
                state.consecutiveDeadLetters += events
                guard pauseAfter > 0, state.consecutiveDeadLetters >= pauseAfter else { return (decision, .none) }
                let why = reason.hasPrefix("http_") ? "HTTP " + reason.dropFirst(5) : reason
                // Paused here, under the lock: an outcome arriving next must already see it.
                let pause = SubscriptionPause(
                    reason: "paused after \(state.consecutiveDeadLetters) consecutive dead letters (\(why))", since: current,
                    webhook: fingerprint)
                state.pause = (pause, current.advanced(by: Self.probeInterval))
                return (decision, .pause(pause))
            }
        }
    }

    /// Stores a pause, or lifts one, as ``countTowardsPause(_:events:probe:)`` decided.
    private func apply(_ step: PauseStep) async {
        switch step {
        case .none: break
        case .resume: await resume(because: "resumed: a probe was delivered")
        case .pause(let pause):
            metrics.paused.record(1)
            logger.error("\(pause.reason); one queued event probes every 5 minutes; `intilery-relay resume` resumes it now")
            do {
                try await store.pause(subscription.name, pause)
                state.withLock { $0.pauseStored = $0.pause != nil }
            } catch {
                logger.error("could not store the pause; it holds until the relay stops", metadata: ["error": "\(error)"])
            }
        }
    }

    private func resume(because why: String) async {
        let was = state.withLock { state -> SubscriptionPause? in
            defer {
                state.pause = nil
                state.pauseStored = false
                state.consecutiveDeadLetters = 0
            }
            return state.pause?.pause
        }
        guard was != nil else { return }
        metrics.paused.record(0)
        logger.notice("\(why)")
        do {
            try await store.resume(subscription.name)
        } catch {
            logger.error("could not store the resume; the subscription may pause again at a restart", metadata: ["error": "\(error)"])
        }
        wakeup.signal()
    }

    /// What the answer says about the endpoint: flow control narrows the flow and is never counted by the breaker;
    /// anything else is (``WebhookAnswer/endpointFailed``).
    private func recordEndpoint(_ answer: WebhookAnswer) {
        if answer.isFlowControl {
            flow.throttled(retryAfter: answer.retryAfter.map { now().advanced(by: min($0, .seconds(3600))) })
            if answer.retryAfter == nil {
                logger.debug("throttled without Retry-After: fewer requests in flight", metadata: ["limit": .stringConvertible(flow.current.limit ?? 0)])
            }
            return
        }
        if answer.status != nil { flow.answered() }
        guard answer.status != nil || answer.transportError != nil else { return }
        let endpointFailed = answer.endpointFailed
        if let change = breaker.record(success: !endpointFailed, now: now()) {
            if case .closed = change { metrics.circuit.record(0) } else { metrics.circuit.record(1) }
            switch change {
            case .open(_, let interval):
                logger.notice("circuit open: pausing deliveries", metadata: ["probe_in_s": .stringConvertible(LogSeconds(interval))])
            case .closed:
                logger.notice("circuit closed: endpoint answering again")
            case .probing:
                break
            }
        }
    }
}

/// What an outcome does to a subscription's pause.
private enum PauseStep {
    case none
    case pause(SubscriptionPause)
    case resume

    var isNone: Bool {
        if case .none = self { true } else { false }
    }
}
