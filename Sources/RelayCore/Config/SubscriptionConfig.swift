/// Which events of a source go to which webhook.
public struct SubscriptionConfig: Sendable, Equatable {
    /// Unique, `[A-Za-z0-9._-]+`; part of every `webhook-id`.
    public var name: String
    /// The source's name.
    public var source: String
    /// Actions to keep; empty keeps all.
    public var include: [String] = []
    /// Actions to drop.
    public var exclude: [String] = []
    /// A filter on event fields (`where` in the file); `nil` keeps every event.
    public var filter: EventFilter? = nil
    /// Where and how events are sent.
    public var webhook: WebhookConfig
    /// Where the subscription's events begin, the first time it appears: `now` joins the source's shared poll as
    /// it stands; an earlier time (or `earliest`) reads that range on its own first. Default `now`.
    public var startFrom: StartPosition = .now

    /// A subscription; see each property for its default.
    public init(
        name: String, source: String, include: [String] = [], exclude: [String] = [], filter: EventFilter? = nil,
        webhook: WebhookConfig
    ) {
        self.name = name
        self.source = source
        self.include = include
        self.exclude = exclude
        self.filter = filter
        self.webhook = webhook
    }
}

/// A subscription's endpoint and delivery policy.
public struct WebhookConfig: Sendable, Equatable {
    /// An `http` or `https` URL.
    public var url: String
    /// Extra request headers, in config order; values are secrets.
    public var headers: [(name: String, value: Secret)] = []
    /// Signs requests (Standard Webhooks) when set.
    public var signingKey: WebhookSigningKey? = nil
    /// How long one attempt may take. Default 15 s.
    public var timeout: Duration = .seconds(15)
    /// What the body holds. Default: the event as received.
    public var payload: PayloadFormat = .event
    /// Events per request; above 1 the body is always a JSON array. Default 1.
    public var batchSize: Int = 1
    /// Requests in flight at once (`ordering: none` only). Default 4.
    public var concurrency: Int = 4
    /// Delivery order. Default: none.
    public var ordering: DeliveryOrdering = .none
    /// A token bucket on requests to this webhook; `nil` for none.
    public var rateLimit: RateLimit? = nil
    /// When to retry and when to give up.
    public var retry = RetryPolicy()
    /// Consecutive dead letters, with no success between them, after which the subscription pauses (one event
    /// probes every 5 minutes). 0 never pauses. Default 20.
    public var pauseAfter: Int = 20
    /// Events queued at most: a full queue stops queueing, keeps its place and reads on from there once it has
    /// drained below half. Bounds the disk a dead endpoint can take. Default 1,000,000.
    public var maxQueued: Int = 1_000_000

    /// A webhook with every default: unsigned, `event` payload, one per request, 4 in flight.
    public init(url: String) { self.url = url }

    public static func == (lhs: WebhookConfig, rhs: WebhookConfig) -> Bool {
        lhs.url == rhs.url && lhs.headers.elementsEqual(rhs.headers) { $0.name == $1.name && $0.value == $1.value }
            && lhs.signingKey == rhs.signingKey && lhs.timeout == rhs.timeout && lhs.payload == rhs.payload
            && lhs.batchSize == rhs.batchSize && lhs.concurrency == rhs.concurrency && lhs.ordering == rhs.ordering
            && lhs.rateLimit == rhs.rateLimit && lhs.retry == rhs.retry && lhs.pauseAfter == rhs.pauseAfter
            && lhs.maxQueued == rhs.maxQueued
    }
}

/// What a webhook request's body holds.
public enum PayloadFormat: String, Sendable, Equatable, CaseIterable {
    /// The event object's bytes exactly as the API returned them.
    case event
    /// `{"id", "type", "timestamp", "subscription", "data": <event>}`.
    case envelope
}

/// Whether a subscription's events must arrive in order.
public enum DeliveryOrdering: String, Sendable, Equatable, CaseIterable {
    /// Up to `concurrency` requests in flight, in any order.
    case none
    /// One request at a time in event-time order; a failing event holds back later ones.
    case strict
}

/// Retry and give-up rules for one webhook.
public struct RetryPolicy: Sendable, Equatable {
    /// Attempts in all, the first included, before an event is dead-lettered. Default 100.
    public var maxAttempts: Int = 100
    /// Time since the event was queued after which it is dead-lettered. Default 72 h.
    public var maxAge: Duration = .seconds(72 * 3600)
    /// The shortest wait before a retry. Default 1 s.
    public var initialBackoff: Duration = .seconds(1)
    /// The longest wait before a retry. Default 1 h.
    public var maxBackoff: Duration = .seconds(3600)

    /// The defaults: keeps trying through a three-day outage.
    public init() {}
}
