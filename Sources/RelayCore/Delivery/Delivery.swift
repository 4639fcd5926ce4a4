/// One queued (subscription, event) pair as the dispatcher reads it from the outbox.
public struct Delivery: Sendable, Equatable {
    /// The outbox row id.
    public var id: Int64
    public var subscription: String
    public var eventID: String { fields.eventID }
    public var eventTime: Timestamp
    public var action: String { fields.action }
    /// The event time as JSON text, exactly as the event wrote it.
    public var timeValue: String { fields.timeValue }
    /// The event's bytes as received.
    public var payload: [UInt8] { fields.payload }
    /// Attempts made so far.
    public var attempts: Int
    public var firstAttemptAt: Timestamp?
    /// Set once the event is part of a batch: the batch's composition is fixed from its first attempt.
    public var batchID: String?
    /// Its place in the batch's body, fixed with the batch.
    public var batchPosition: Int? = nil
    /// When it may next be tried.
    public var nextAttemptAt: Timestamp
    /// When it was queued for the subscription (or put back by a replay): `maxAge` counts from here.
    public var queuedAt: Timestamp
    /// Whether the store handed it out from the subscription's log (SubscriptionLogs), so that recording its outcome
    /// need not look at the index to find where it is queued. A hint about where it was, not part of what it is.
    var queuedInLog: Bool {
        get { queue.inLog }
        set { queue.inLog = newValue }
    }
    private var queue = QueueHint()

    private struct QueueHint: Sendable, Equatable {
        var inLog = false
        static func == (lhs: QueueHint, rhs: QueueHint) -> Bool { true }
    }

    /// The event's part, behind one reference: a delivery is copied several times on its way (planned, batched, sent,
    /// its outcome recorded), and with each string and the payload its own reference, each copy cost up to four
    /// retains and four releases. Shared by the deliveries of one event to several subscriptions.
    private let fields: Fields

    private final class Fields: Sendable, Equatable {
        let eventID: String
        let action: String
        let timeValue: String
        let payload: [UInt8]

        init(eventID: String, action: String, timeValue: String, payload: [UInt8]) {
            self.eventID = eventID
            self.action = action
            self.timeValue = timeValue
            self.payload = payload
        }

        static func == (lhs: Fields, rhs: Fields) -> Bool {
            lhs === rhs
                || (lhs.eventID, lhs.action, lhs.timeValue) == (rhs.eventID, rhs.action, rhs.timeValue)
                    && lhs.payload == rhs.payload
        }
    }

    public init(
        id: Int64, subscription: String, eventID: String, eventTime: Timestamp, action: String, timeValue: String,
        payload: [UInt8], attempts: Int, firstAttemptAt: Timestamp?, batchID: String?, batchPosition: Int? = nil,
        nextAttemptAt: Timestamp, queuedAt: Timestamp? = nil
    ) {
        self.id = id
        self.subscription = subscription
        fields = Fields(eventID: eventID, action: action, timeValue: timeValue, payload: payload)
        self.eventTime = eventTime
        self.attempts = attempts
        self.firstAttemptAt = firstAttemptAt
        self.batchID = batchID
        self.batchPosition = batchPosition
        self.nextAttemptAt = nextAttemptAt
        self.queuedAt = queuedAt ?? nextAttemptAt
    }
}

/// What one request came to, for every delivery it carried.
public struct DeliveryOutcome: Sendable {
    /// What happens to the deliveries.
    public enum Decision: Sendable, Equatable {
        /// A 2xx: done.
        case delivered
        /// Try again at this time.
        case retry(at: Timestamp)
        /// Give up, keeping them as dead letters with this reason.
        case deadLetter(reason: String)

        /// As the metrics and logs name it.
        var logName: String {
            switch self {
            case .delivered: return "delivered"
            case .retry: return "retry"
            case .deadLetter: return "dead_letter"
            }
        }
    }

    /// The deliveries of the request (one, or a batch).
    public var deliveries: [Delivery]
    public var decision: Decision
    /// When this attempt started.
    public var attemptedAt: Timestamp
    /// When its answer was judged: a dead letter's time. Later than `attemptedAt` by the request's duration, so
    /// that an attempt started before `maxAge` and failed after it is dead after `maxAge`, not before.
    public var decidedAt: Timestamp
    /// The HTTP status, when there was one.
    public var status: Int?
    /// A short description of what went wrong, never a secret.
    public var error: String?
    /// Up to 1 KiB of the response, kept with dead letters.
    public var responseSnippet: [UInt8]

    /// An outcome as given.
    public init(
        deliveries: [Delivery], decision: Decision, attemptedAt: Timestamp, decidedAt: Timestamp? = nil, status: Int? = nil,
        error: String? = nil, responseSnippet: [UInt8] = []
    ) {
        self.deliveries = deliveries
        self.decision = decision
        self.attemptedAt = attemptedAt
        self.decidedAt = max(decidedAt ?? attemptedAt, attemptedAt)
        self.status = status
        self.error = error
        self.responseSnippet = responseSnippet
    }
}
