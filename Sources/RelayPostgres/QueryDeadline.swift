import RelayCore
import Synchronization

/// A database call that took longer than the relay's own deadline: nothing is assumed about what it did. The
/// server's `statement_timeout` bounds a statement; this bounds everything around it too (waiting for a
/// connection from the pool, a connection that hangs), so that no loop of the relay waits on the database forever.
public struct QueryDeadlineExceeded: Error, CustomStringConvertible {
    public let what: String
    public let limit: Duration
    public var description: String { "\(what) took longer than \(LogSeconds(limit)) s; given up (the database may be unreachable)" }
}

/// What a call under ``withQueryDeadline(_:_:whenCancelled:_:)`` does when its caller is cancelled.
public enum QueryCancelling: Sendable {
    /// The caller gets `CancellationError` at once and the call is cancelled and left to end by itself:
    /// postgres-nio does not end a query in flight when its task is cancelled, and a caller being cancelled (a
    /// poller whose lease was lost) must not wait out a query on a connection the server has already closed.
    case giveUp
    /// The call runs on, uncancelled, within its deadline, and the caller waits for it: for the writes a stop makes
    /// on its way out (outcomes recorded, claims and leases given back), which would otherwise be left for a
    /// visibility timeout or a TTL to undo.
    case finish
}

/// Runs `body`, giving up after `limit`: the caller gets ``QueryDeadlineExceeded`` then, and `body` is cancelled and
/// left to end by itself. Cancelling the caller does what `whenCancelled` says.
public func withQueryDeadline<T: Sendable>(
    _ limit: Duration, _ what: String, whenCancelled: QueryCancelling = .giveUp,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let race = DeadlineRace<T>()
    let run = {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            race.start(continuation, body: body, limit: limit, what: what)
        }
    }
    switch whenCancelled {
    case .finish:
        // The call and its timer are unstructured tasks: the caller's cancellation does not reach them.
        return try await run()
    case .giveUp:
        return try await withTaskCancellationHandler { try await run() } onCancel: { race.cancel() }
    }
}

/// The two sides of ``withQueryDeadline(_:_:whenCancelled:_:)``: whichever ends first resumes the caller and
/// cancels the other.
private final class DeadlineRace<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        var work: Task<Void, Never>?
        var timer: Task<Void, Never>?
        var cancelled = false
    }
    private let state = Mutex(State())

    func start(_ continuation: CheckedContinuation<T, any Error>, body: @escaping @Sendable () async throws -> T, limit: Duration, what: String) {
        // The continuation first: either side may end before the tasks are stored.
        let cancelledAlready = state.withLock { state -> Bool in
            if !state.cancelled { state.continuation = continuation }
            return state.cancelled
        }
        guard !cancelledAlready else { return continuation.resume(throwing: CancellationError()) }
        let work = Task {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            self.finish(result)?.cancel()
        }
        let timer = Task {
            guard (try? await Task.sleep(for: limit)) != nil else { return }
            self.finish(.failure(QueryDeadlineExceeded(what: what, limit: limit)), timedOut: true)?.cancel()
        }
        let ended = state.withLock { state -> Bool in
            state.work = work
            state.timer = timer
            return state.continuation == nil
        }
        // Over before the tasks were stored (one side won, or the caller was cancelled): neither was cancelled yet.
        if ended {
            timer.cancel()
            work.cancel()
        }
    }

    /// Resumes the caller unless the other side did; returns the other side's task, to cancel.
    private func finish(_ result: Result<T, any Error>, timedOut: Bool = false) -> Task<Void, Never>? {
        let (continuation, other) = state.withLock { state -> (CheckedContinuation<T, any Error>?, Task<Void, Never>?) in
            defer { state.continuation = nil }
            return (state.continuation, timedOut ? state.work : state.timer)
        }
        guard let continuation else { return nil }
        continuation.resume(with: result)
        return other
    }

    /// The caller was cancelled: it gets `CancellationError` now, and both sides are cancelled.
    func cancel() {
        let (continuation, work, timer) = state.withLock { state in
            state.cancelled = true
            defer { state.continuation = nil }
            return (state.continuation, state.work, state.timer)
        }
        continuation?.resume(throwing: CancellationError())
        work?.cancel()
        timer?.cancel()
    }
}

/// The shared queue with ``withQueryDeadline(_:_:whenCancelled:_:)`` around every call.
public struct DeadlineClaimQueue: ClaimQueue {
    let queue: any ClaimQueue
    let limit: Duration

    public init(_ queue: any ClaimQueue, limit: Duration) {
        self.queue = queue
        self.limit = limit
    }

    public func claim(_ subscription: String, requests: Int, batchSize: Int, by instance: String, visibility: Duration) async throws
        -> [ClaimedRequest]
    {
        try await withQueryDeadline(limit, "claiming deliveries of \(subscription)") { [queue] in
            try await queue.claim(subscription, requests: requests, batchSize: batchSize, by: instance, visibility: visibility)
        }
    }

    public func claimHead(_ subscription: String, batchSize: Int, by instance: String, visibility: Duration) async throws -> ClaimedRequest? {
        try await withQueryDeadline(limit, "claiming the head of \(subscription)") { [queue] in
            try await queue.claimHead(subscription, batchSize: batchSize, by: instance, visibility: visibility)
        }
    }

    public func record(_ outcomes: [ClaimedOutcome], now: Timestamp) async throws -> (applied: Int, stale: Int) {
        try await withQueryDeadline(limit, "recording \(outcomes.count) outcomes", whenCancelled: .finish) { [queue] in
            try await queue.record(outcomes, now: now)
        }
    }

    public func release(_ tokens: [Int64], subscription: String) async throws {
        try await withQueryDeadline(limit, "releasing claims of \(subscription)", whenCancelled: .finish) { [queue] in
            try await queue.release(tokens, subscription: subscription)
        }
    }
}

/// The shared rate limits and breakers with ``withQueryDeadline(_:_:whenCancelled:_:)`` around every call.
public struct DeadlineWebhookGuards: SharedWebhookGuards {
    let guards: any SharedWebhookGuards
    let limit: Duration

    public init(_ guards: any SharedWebhookGuards, limit: Duration) {
        self.guards = guards
        self.limit = limit
    }

    public func reserve(_ key: String, count: Int, rate: Double, burst: Int) async throws -> Duration {
        try await withQueryDeadline(limit, "taking rate-limit tokens") { [guards] in try await guards.reserve(key, count: count, rate: rate, burst: burst) }
    }

    public func permission(_ key: String, rule: SharedBreakerRule) async throws -> SharedPermission {
        try await withQueryDeadline(limit, "reading the circuit breaker") { [guards] in try await guards.permission(key, rule: rule) }
    }

    @discardableResult
    public func record(_ key: String, success: Bool, rule: SharedBreakerRule) async throws -> SharedBreakerChange? {
        try await withQueryDeadline(limit, "recording on the circuit breaker") { [guards] in try await guards.record(key, success: success, rule: rule) }
    }
}

/// The shared pauses with ``withQueryDeadline(_:_:whenCancelled:_:)`` around every call.
public struct DeadlinePauses: SharedPauses {
    let pauses: any SharedPauses
    let limit: Duration

    public init(_ pauses: any SharedPauses, limit: Duration) {
        self.pauses = pauses
        self.limit = limit
    }

    public func pause(of subscription: String) async throws -> SubscriptionPause? {
        try await withQueryDeadline(limit, "reading the pause of \(subscription)") { [pauses] in try await pauses.pause(of: subscription) }
    }

    public func countDeadLetters(
        _ subscription: String, events: Int, pauseAfter: Int, pause: @escaping @Sendable (_ count: Int) -> SubscriptionPause, probeEvery: Duration
    ) async throws -> (pause: SubscriptionPause, madeNow: Bool)? {
        try await withQueryDeadline(limit, "counting dead letters of \(subscription)") { [pauses] in
            try await pauses.countDeadLetters(subscription, events: events, pauseAfter: pauseAfter, pause: pause, probeEvery: probeEvery)
        }
    }

    @discardableResult
    public func delivered(_ subscription: String) async throws -> Bool {
        try await withQueryDeadline(limit, "counting a delivery of \(subscription)") { [pauses] in try await pauses.delivered(subscription) }
    }

    public func takeProbe(_ subscription: String, probeEvery: Duration) async throws -> Bool {
        try await withQueryDeadline(limit, "taking the probe of \(subscription)") { [pauses] in
            try await pauses.takeProbe(subscription, probeEvery: probeEvery)
        }
    }

    @discardableResult
    public func resume(_ subscription: String) async throws -> Bool {
        try await withQueryDeadline(limit, "resuming \(subscription)") { [pauses] in try await pauses.resume(subscription) }
    }
}
