import CurlHTTP
import Logging
import Synchronization

/// Delivers one subscription's events from a queue that several instances share (docs/several-instances.md): it
/// claims due rows for its free slots only, sends each claim, and records the outcome under the claim's token, so
/// that an outcome arriving after its claim timed out (the rows went to another instance) changes nothing. The
/// webhook's rate limit and circuit breaker are shared too: they hold for all instances together.
///
/// The retry rules are the single-instance ``Dispatcher``'s (``DeliveryPolicy``), and so is the pause after
/// `pauseAfter` dead letters in a row, counted for all instances together. A 429 (or a 503 with `Retry-After`) is
/// flow control for this instance, as ``FlowControl`` has it: with `Retry-After` it claims nothing until then,
/// without it its requests in flight halve and grow back by one with each answer.
public final class ClaimDispatcher<C: Clock>: Sendable where C.Duration == Duration, C: Sendable {
    /// Signalled when this instance's poller queued rows for the subscription, or a request ended: the loop
    /// claims again at once instead of at its next idle check.
    public let wakeup = WakeupSignal()

    private let subscription: SubscriptionConfig
    private let queue: any ClaimQueue
    private let guards: any SharedWebhookGuards
    private let pauses: any SharedPauses
    private let http: CurlHTTPClient
    private let instance: String
    private let time: RelayTime<C>
    private let logger: Logger
    private let builder: WebhookRequestBuilder
    private let policy: DeliveryPolicy
    private let metrics: SubscriptionMetrics
    private let inFlight = Mutex(0)
    /// Outcomes waiting for the recorder, and the signal that one came in.
    private let pendingOutcomes = Mutex<[ClaimedOutcome]>([])
    private let outcomeReady = WakeupSignal()
    /// Whether this instance saw the endpoint fail since it last told the shared breaker of a success: only then
    /// is a success worth a write (a closed breaker with no failures stays as it is).
    private let failureSinceSuccess = Mutex(true)
    /// Set while this instance's request is the shared breaker's probe: its outcome is always written.
    private let probing = Mutex(false)
    /// The shared rate limit's and breaker's key: the webhook, as its fingerprint names it.
    private let guardKey: String
    private let breakerRule: SharedBreakerRule
    /// How long a claim hides its rows from other instances: longer than a request may take, with room for the
    /// shared rate limit's wait before it.
    public let visibility: Duration
    /// How often an idle loop looks for rows that others queued or put back, or whose retry came due.
    private let idleCheck: Duration
    private let pause = Mutex(PauseState())
    /// The receiver's own word on how fast to send, as this instance heard it.
    private let flow = FlowControl()
    private let webhookFingerprint: String

    /// The subscription's pause as this instance last read it, and its part in probing.
    private struct PauseState {
        var pause: SubscriptionPause?
        /// When the pause was last read: another instance may pause or probe, `resume` may lift it.
        var readAt: ContinuousClock.Instant?
        /// The claim this instance sends as the paused subscription's probe.
        var probe: Int64?
        /// Whether a dead letter was counted since this instance last told the store of a delivery: only then is a
        /// delivery worth a write (true at start: an earlier run may have left a count).
        var deadLetterSinceDelivery = true
    }

    /// How often a paused subscription's state is read again: a `resume` from anywhere is seen within it.
    static var pauseReadInterval: Duration { .seconds(1) }

    /// A dispatcher for `subscription` on `queue`, claiming as `instance`; `visibility` is twice the webhook's
    /// timeout and 10 s unless given.
    public init(
        subscription: SubscriptionConfig, queue: any ClaimQueue, guards: any SharedWebhookGuards, pauses: any SharedPauses,
        http: CurlHTTPClient, instance: String, time: RelayTime<C>, logger: Logger, visibility: Duration? = nil,
        idleCheck: Duration = .milliseconds(250)
    ) {
        self.subscription = subscription
        self.queue = queue
        self.guards = guards
        self.pauses = pauses
        self.http = http
        self.instance = instance
        self.time = time
        var logger = logger
        logger[metadataKey: "subscription"] = "\(subscription.name)"
        self.logger = logger
        builder = WebhookRequestBuilder(subscription: subscription)
        policy = DeliveryPolicy(retry: subscription.webhook.retry)
        metrics = SubscriptionMetrics(subscription: subscription.name)
        webhookFingerprint = WebhookRequestBuilder.fingerprint(of: subscription.webhook)
        guardKey = "webhook/" + webhookFingerprint
        breakerRule = SharedBreakerRule(probeTimeout: subscription.webhook.timeout + .seconds(5))
        self.visibility = visibility ?? subscription.webhook.timeout * 2 + .seconds(10)
        self.idleCheck = idleCheck
    }

    /// The subscription delivered.
    public var subscriptionName: String { subscription.name }

    /// Places of this instance taken now: requests waiting for the rate limit, being sent, or whose outcome awaits
    /// its recording.
    public var requestsInFlight: Int { inFlight.withLock { $0 } }

    private var strict: Bool { subscription.webhook.ordering == .strict }
    private var slots: Int { strict ? 1 : max(subscription.webhook.concurrency, 1) }

    /// Delivers until `stop` fires (the requests out finish and record their outcomes) or the task is cancelled
    /// (they are cut short; their claims time out and their rows go to the next claimant). The store going away
    /// is logged and retried, never thrown.
    public func run(stop: StopSignal = StopSignal()) async {
        let sent = StopSignal()
        await withTaskGroup(of: Void.self) { recorder in
            recorder.addTask { await self.recordOutcomes(until: sent) }
            await deliver(stop: stop)
            sent.fire()
        }
    }

    private func deliver(stop: StopSignal) async {
        await withDiscardingTaskGroup { group in
            var failures = 0
            while !Task.isCancelled && !stop.isFired {
                do {
                    let claims = try await claimForFreeSlots()
                    failures = 0
                    if !claims.isEmpty {
                        for claim in claims {
                            group.addTask {
                                // A place is free again once its outcome is recorded (the recorder frees it), so
                                // that what a kill can leave unrecorded stays within `concurrency`.
                                if await !self.deliver(claim) {
                                    self.inFlight.withLock { $0 -= 1 }
                                    self.wakeup.signal()
                                }
                            }
                        }
                        continue
                    }
                } catch is BreakerWait {
                    // Fall through to the wait: the breaker said when to look again.
                } catch is PausedWait {
                    // Paused, and no probe for this instance now.
                } catch let wait as FlowWait {
                    let left = Duration.milliseconds(wait.until.millisecondsSinceEpoch - time.now().millisecondsSinceEpoch)
                    await idle(for: max(.milliseconds(1), min(left, .seconds(1))), stop: stop)
                    continue
                } catch {
                    failures += 1
                    logger.warning("could not claim deliveries; retrying", metadata: ["error": "\(error)", "failures": .stringConvertible(failures)])
                    await idle(for: min(.seconds(1) * (1 << min(failures, 5)), .seconds(30)), stop: stop)
                    continue
                }
                await idle(for: idleCheck, stop: stop)
            }
        }
    }

    /// The breaker is open for every instance: nothing is claimed until it lets a request (or a probe) go.
    private struct BreakerWait: Error {}

    /// The subscription is paused and this instance has no probe to send now.
    private struct PausedWait: Error {}

    /// The receiver said when to send again (`Retry-After`).
    private struct FlowWait: Error {
        let until: Timestamp
    }

    private func claimForFreeSlots() async throws -> [ClaimedRequest] {
        if let until = flow.pause(at: time.now()) { throw FlowWait(until: until) }
        let free = min(slots, flow.current.limit ?? slots) - inFlight.withLock { $0 }
        guard free > 0 else { return [] }
        var wanted: Int
        switch try await guards.permission(guardKey, rule: breakerRule) {
        case .send: wanted = free
        case .probe:
            wanted = 1
            probing.withLock { $0 = true }
        case .wait: throw BreakerWait()
        }
        let probe = try await mayProbe()
        if probe == false { throw PausedWait() }
        if probe == true { wanted = 1 }
        let batchSize = max(subscription.webhook.batchSize, 1)
        let claims: [ClaimedRequest]
        if strict {
            claims = try await queue.claimHead(subscription.name, batchSize: batchSize, by: instance, visibility: visibility).map { [$0] } ?? []
        } else {
            claims = try await queue.claim(subscription.name, requests: wanted, batchSize: batchSize, by: instance, visibility: visibility)
        }
        inFlight.withLock { $0 += claims.count }
        if probe == true { pause.withLock { $0.probe = claims.first?.token } }
        return claims
    }

    // MARK: - Pausing after repeated dead letters

    /// Nil when the subscription is not paused; when it is, whether this instance sends its next probe (one
    /// instance at a time, one probe every ``Dispatcher/probeInterval``). The pause is read again once a
    /// ``pauseReadInterval`` has passed, and a pause made with another webhook is lifted (the config changed it).
    private func mayProbe() async throws -> Bool? {
        let now = ContinuousClock.now
        let (known, readAt, probeOut) = pause.withLock { ($0.pause, $0.readAt, $0.probe != nil) }
        if let readAt, readAt.duration(to: now) < Self.pauseReadInterval { return known.map { _ in false } }
        var current = try await pauses.pause(of: subscription.name)
        if let stored = current, stored.webhook != webhookFingerprint {
            try await pauses.resume(subscription.name)
            logger.notice("resumed: the webhook changed", metadata: ["was": "\(stored.reason)"])
            current = nil
        }
        pause.withLock {
            $0.pause = current
            $0.readAt = now
        }
        switch (known, current) {
        case (nil, let made?):
            metrics.paused.record(1)
            logger.warning("\(made.reason) (paused for every instance); one queued event probes every 5 minutes", metadata: ["since": "\(made.since.iso8601)"])
        case (_?, nil):
            metrics.paused.record(0)
            logger.notice("resumed")
        default: break
        }
        guard current != nil else { return nil }
        guard !probeOut else { return false }
        return try await pauses.takeProbe(subscription.name, probeEvery: Dispatcher<C>.probeInterval)
    }

    /// While paused nothing is dead-lettered: a failed probe's rows stay queued, due at once, for the next probe.
    private func decisionWhilePaused(_ decision: DeliveryOutcome.Decision, token: Int64) -> DeliveryOutcome.Decision {
        pause.withLock { state in
            if state.probe == token { state.probe = nil }
            guard state.pause != nil, case .deadLetter = decision else { return decision }
            return .retry(at: time.now())
        }
    }

    /// Counts a decision towards `pauseAfter` in the shared count: a dead letter adds to it, and pauses the
    /// subscription for every instance when it reaches `pauseAfter`; a delivery zeroes it and lifts a pause. A dead
    /// letter that finds the subscription paused by another instance is not one: it stays queued for the probes.
    private func countTowardsPause(_ decision: DeliveryOutcome.Decision, events: Int) async -> DeliveryOutcome.Decision {
        let pauseAfter = subscription.webhook.pauseAfter
        do {
            switch decision {
            case .delivered:
                let worthWriting = pause.withLock { state in
                    defer { state.deadLetterSinceDelivery = false }
                    return state.deadLetterSinceDelivery || state.pause != nil
                }
                guard worthWriting else { return decision }
                if try await pauses.delivered(subscription.name) {
                    pause.withLock { $0.pause = nil }
                    metrics.paused.record(0)
                    logger.notice("resumed: a probe was delivered")
                    wakeup.signal()
                }
                return decision
            case .retry:
                return decision
            case .deadLetter(let reason):
                pause.withLock { $0.deadLetterSinceDelivery = true }
                guard pauseAfter > 0 else { return decision }
                let (fingerprint, now) = (webhookFingerprint, time.now())
                let why = reason.hasPrefix("http_") ? "HTTP " + reason.dropFirst(5) : reason
                let counted = try await pauses.countDeadLetters(
                    subscription.name, events: events, pauseAfter: pauseAfter,
                    pause: { SubscriptionPause(reason: "paused after \($0) consecutive dead letters (\(why))", since: now, webhook: fingerprint) },
                    probeEvery: Dispatcher<C>.probeInterval)
                guard let (inForce, madeNow) = counted else { return decision }
                let known = pause.withLock { state -> Bool in
                    defer {
                        state.pause = inForce
                        state.readAt = .now
                    }
                    return state.pause != nil
                }
                if madeNow {
                    metrics.paused.record(1)
                    logger.error("\(inForce.reason) for every instance; one queued event probes every 5 minutes; `intilery-relay resume` resumes it now")
                    return decision
                }
                if !known {
                    metrics.paused.record(1)
                    logger.warning("\(inForce.reason) (paused by another instance); one queued event probes every 5 minutes")
                }
                return .retry(at: now)
            }
        } catch {
            logger.warning("could not count the outcome towards pauseAfter", metadata: ["error": "\(error)"])
            return decision
        }
    }

    private func idle(for duration: Duration, stop: StopSignal) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.wakeup.wait() }
            group.addTask { [time] in try? await time.sleep(for: duration) }
            group.addTask { await stop.wait() }
            _ = await group.next()
            group.cancelAll()
        }
    }

    /// Sends one claim and hands its outcome to the recorder; false when it sent nothing (the claim is released).
    private func deliver(_ claim: ClaimedRequest) async -> Bool {
        do {
            if let limit = subscription.webhook.rateLimit {
                let wait = try await guards.reserve(guardKey, count: 1, rate: limit.perSecond, burst: limit.burst)
                if wait > .zero { try await time.sleep(for: wait) }
            }
        } catch {
            // Cancelled while waiting for the rate limit, or the store went away: the claim was never sent.
            try? await queue.release([claim.token], subscription: subscription.name)
            return false
        }
        let attemptedAt = time.now()
        let started = ContinuousClock.now
        let result: Result<HTTPResponse, CurlHTTPError>
        do {
            result = .success(try await http.execute(builder.request(for: claim.deliveries, now: attemptedAt)))
        } catch {
            if error.code == .cancelled || error.code == .shutDown {
                try? await queue.release([claim.token], subscription: subscription.name)
                return false
            }
            result = .failure(error)
        }
        let outcome = await conclude(claim, result, attemptedAt: attemptedAt, started: started)
        pendingOutcomes.withLock { $0.append(ClaimedOutcome(token: claim.token, outcome: outcome)) }
        outcomeReady.signal()
        return true
    }

    /// Records the outcomes that requests submit, as many as have come in per transaction (one round of the
    /// database for a burst of answers, not one for each), until `sent` fires and none is left. A failure to record
    /// leaves the claims to time out: their rows are sent again by whoever claims them next (at least once).
    private func recordOutcomes(until sent: StopSignal) async {
        while true {
            let batch = pendingOutcomes.withLock { pending -> [ClaimedOutcome] in
                defer { pending = [] }
                return pending
            }
            if batch.isEmpty {
                if sent.isFired { return }
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await self.outcomeReady.wait() }
                    group.addTask { await sent.wait() }
                    _ = await group.next()
                    group.cancelAll()
                }
                continue
            }
            defer {
                inFlight.withLock { $0 -= batch.count }
                wakeup.signal()
            }
            do {
                let (_, stale) = try await queue.record(batch, now: time.now())
                if stale > 0 {
                    logger.notice("outcomes came after their claims timed out: another instance has the rows", metadata: ["stale": .stringConvertible(stale)])
                }
            } catch {
                // Not retried: a claim that outlives its visibility goes to the next claimant, who sends it again.
                logger.warning(
                    "could not record outcomes; their events are sent again once the claims time out",
                    metadata: ["error": "\(error)", "outcomes": .stringConvertible(batch.count)])
            }
        }
    }

    private func conclude(
        _ claim: ClaimedRequest, _ result: Result<HTTPResponse, CurlHTTPError>, attemptedAt: Timestamp, started: ContinuousClock.Instant
    ) async -> DeliveryOutcome {
        let decidedAt = time.now()
        let answer = WebhookAnswer(result, now: decidedAt)
        let deliveries = claim.deliveries
        let attempts = (deliveries.map(\.attempts).max() ?? 0) + 1
        var random = SystemRandomNumberGenerator()
        let decided = decisionWhilePaused(
            policy.decide(
                status: answer.status, transportError: answer.transportError, retryAfter: answer.retryAfter, attempts: attempts,
                queuedAt: deliveries.map(\.queuedAt).min() ?? attemptedAt, now: decidedAt, random: &random),
            token: claim.token)
        recordFlow(answer)
        await recordBreaker(answer)
        let decision = await countTowardsPause(decided, events: deliveries.count)
        metrics.latency.recordNanoseconds(Int64((ContinuousClock.now - started) / .nanoseconds(1)))
        metrics.record(decision, events: deliveries.count)
        logger.trace(
            "request done",
            metadata: RequestLogLine.metadata(
                deliveries, attempt: attempts, took: ContinuousClock.now - started, outcome: decision, status: answer.status,
                transportError: answer.transportError))
        if case .deadLetter(let reason) = decision {
            logger.warning(
                "dead-lettered", metadata: ["events": .stringConvertible(deliveries.count), "first_event": "\(deliveries[0].eventID)", "reason": "\(reason)",
                                            "attempts": .stringConvertible(attempts)])
        }
        return DeliveryOutcome(
            deliveries: deliveries, decision: decision, attemptedAt: attemptedAt, decidedAt: decidedAt, status: answer.status, error: answer.errorText,
            responseSnippet: answer.snippet)
    }

    /// A 429 narrows this instance's flow (or stops it until `Retry-After`); any other answer widens it again.
    private func recordFlow(_ answer: WebhookAnswer) {
        if answer.isFlowControl {
            flow.throttled(retryAfter: answer.retryAfter.map { time.now().advanced(by: min($0, .seconds(3600))) }, inFlight: inFlight.withLock { $0 })
            if answer.retryAfter == nil {
                logger.debug("throttled without Retry-After: fewer requests in flight", metadata: ["limit": .stringConvertible(flow.current.limit ?? 0)])
            }
        } else if answer.status != nil {
            flow.answered()
        }
    }

    /// As the single-instance dispatcher counts them: flow control is not counted, and only trouble with the
    /// endpoint itself is a failure.
    private func recordBreaker(_ answer: WebhookAnswer) async {
        guard !answer.isFlowControl, answer.status != nil || answer.transportError != nil else { return }
        let endpointFailed = answer.endpointFailed
        let worthWriting = failureSinceSuccess.withLock { sawFailure in
            defer { sawFailure = endpointFailed }
            return endpointFailed || sawFailure
        }
        // A success after successes changes nothing in a closed breaker: no write per request for it.
        let probe = probing.withLock { probe in
            defer { probe = false }
            return probe
        }
        guard worthWriting || probe else { return }
        do {
            switch try await guards.record(guardKey, success: !endpointFailed, rule: breakerRule) {
            case .opened(let interval)?:
                metrics.circuit.record(1)
                logger.notice("circuit open for every instance: pausing deliveries", metadata: ["probe_in_s": .stringConvertible(LogSeconds(interval))])
            case .closed?:
                metrics.circuit.record(0)
                logger.notice("circuit closed: endpoint answering again")
            case nil:
                break
            }
        } catch {
            logger.warning("could not record the outcome on the shared circuit breaker", metadata: ["error": "\(error)"])
        }
    }
}
