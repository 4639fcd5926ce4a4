/// What one claim gave an instance to send: one request's deliveries (one event, or a batch in its body order),
/// under a token that its outcome must carry.
public struct ClaimedRequest: Sendable, Equatable {
    /// Names this claim: an outcome applies only while the rows still carry it.
    public let token: Int64
    public let deliveries: [Delivery]

    public init(token: Int64, deliveries: [Delivery]) {
        self.token = token
        self.deliveries = deliveries
    }
}

/// An outcome for a claimed request.
public struct ClaimedOutcome: Sendable {
    public let token: Int64
    public let outcome: DeliveryOutcome

    public init(token: Int64, outcome: DeliveryOutcome) {
        self.token = token
        self.outcome = outcome
    }
}

/// A deliveries queue that several instances share: each claims due rows for its free slots, hidden from the
/// others for a visibility timeout, and reports outcomes by claim token, so that a late outcome from a claim that
/// timed out (its rows claimed again elsewhere) changes nothing.
public protocol ClaimQueue: Sendable {
    /// Up to `requests` requests' worth of due rows of `subscription`, batches whole and loose rows composed into
    /// batches of `batchSize`.
    func claim(_ subscription: String, requests: Int, batchSize: Int, by instance: String, visibility: Duration) async throws
        -> [ClaimedRequest]

    /// The head of `subscription`'s line, for strict order: nil while another claim of the subscription is out.
    func claimHead(_ subscription: String, batchSize: Int, by instance: String, visibility: Duration) async throws -> ClaimedRequest?

    /// Applies outcomes; how many applied and how many were stale.
    func record(_ outcomes: [ClaimedOutcome], now: Timestamp) async throws -> (applied: Int, stale: Int)

    /// Puts claims never sent (a stop came first) back in the queue, due at once.
    func release(_ tokens: [Int64], subscription: String) async throws
}

/// When a shared circuit breaker opens, and for how long: the in-process ``CircuitBreaker``'s rule, with a probe
/// timeout for an instance that dies mid-probe.
public struct SharedBreakerRule: Sendable {
    public var threshold: Int
    public var initialInterval: Duration
    public var maximumInterval: Duration
    /// How long a probe may take before another instance may probe instead (its instance may have died).
    public var probeTimeout: Duration

    public init(
        threshold: Int = CircuitBreaker.defaultThreshold, initialInterval: Duration = CircuitBreaker.defaultInitialInterval,
        maximumInterval: Duration = CircuitBreaker.defaultMaximumInterval, probeTimeout: Duration
    ) {
        self.threshold = threshold
        self.initialInterval = initialInterval
        self.maximumInterval = maximumInterval
        self.probeTimeout = probeTimeout
    }
}

/// What a sender may do now under a shared breaker.
public enum SharedPermission: Sendable, Equatable {
    case send
    /// Send this one request as the probe, for every instance; report its outcome.
    case probe
    case wait(Duration)
}

/// A shared breaker's change between open and closed, for the log.
public enum SharedBreakerChange: Sendable, Equatable {
    case opened(for: Duration)
    case closed
}

/// A webhook's rate limit and circuit breaker held for every instance together.
public protocol SharedWebhookGuards: Sendable {
    /// Takes `count` tokens from `key`'s bucket; how long to wait before sending.
    func reserve(_ key: String, count: Int, rate: Double, burst: Int) async throws -> Duration
    /// Whether a request to `key` may go now.
    func permission(_ key: String, rule: SharedBreakerRule) async throws -> SharedPermission
    /// Records a request's outcome on `key`'s breaker.
    @discardableResult
    func record(_ key: String, success: Bool, rule: SharedBreakerRule) async throws -> SharedBreakerChange?
}

/// Pauses after `pauseAfter` dead letters in a row, held for every instance together: the count is shared, one
/// instance at a time probes a paused subscription, and `resume` from anywhere lifts it.
public protocol SharedPauses: Sendable {
    /// The subscription's pause, if it is paused.
    func pause(of subscription: String) async throws -> SubscriptionPause?

    /// Counts `events` more dead letters in a row; once the count reaches `pauseAfter`, pauses the subscription
    /// with `pause` (its first probe `probeEvery` later). Returns the pause in force, and whether this call made
    /// it; nil when the subscription is not paused.
    func countDeadLetters(_ subscription: String, events: Int, pauseAfter: Int, pause: @escaping @Sendable (_ count: Int) -> SubscriptionPause, probeEvery: Duration)
        async throws -> (pause: SubscriptionPause, madeNow: Bool)?

    /// A delivery: the count starts again, and a pause lifts; whether one did.
    @discardableResult
    func delivered(_ subscription: String) async throws -> Bool

    /// Whether this caller sends the paused subscription's next probe: true for one caller, of any instance, once
    /// the probe is due; the one after is due `probeEvery` later.
    func takeProbe(_ subscription: String, probeEvery: Duration) async throws -> Bool

    /// Lifts a pause (`intilery-relay resume`, or the webhook changed); false when it was not paused.
    @discardableResult
    func resume(_ subscription: String) async throws -> Bool
}
