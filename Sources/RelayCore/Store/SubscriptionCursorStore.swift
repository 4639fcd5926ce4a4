/// What the catch-up edge needs of a store (docs/architecture.md, "Subscription cursors"): each subscription's
/// place, a subscription's own read queued and its place moved in one transaction, and the join to the shared poll
/// with its tail. SQLite's ``StateStore`` and PostgreSQL's source store provide it; the page commit of either
/// (``SourceStore/enqueue(source:events:advance:skipped:queueLimits:now:)``) feeds a subscription that is behind
/// only the late events before its place, and puts one whose queue is full behind.
public protocol SubscriptionCursorStore: Sendable {
    /// Records the subscriptions of a config the first time each appears: `startFrom: now` joins the shared poll,
    /// an earlier time starts behind, at that time. Returns those that start behind.
    func registerSubscriptions(_ subscriptions: [SubscriptionConfig], now: Timestamp) async throws -> [SubscriptionCursor]

    /// A subscription's cursor; nil before it is registered.
    func subscriptionCursor(_ subscription: String) async throws -> SubscriptionCursor?

    /// The subscriptions of `source` that are not current.
    func subscriptionsNotCurrent(source: String) async throws -> [SubscriptionCursor]

    /// How many deliveries are queued for `subscription`.
    func queueDepth(_ subscription: String) async throws -> Int

    /// Queues, for a subscription that is behind, what its own read found, and moves its position to `through`,
    /// in one transaction; stops at the first event that finds its queue at `limit`, keeping its position there.
    func queueCatchUp(subscription: String, source: String, events: [Event], through: Timestamp, limit: Int, now: Timestamp)
        async throws -> EnqueueResult

    /// Joins a subscription that is behind to the shared poll once its read has reached the seen-id horizon and
    /// the live cursor its position, listing the events the poll saw from its position on for the tail read.
    /// Returns the cursor as joined, or nil when it cannot join yet.
    func beginJoin(_ subscription: String) async throws -> SubscriptionCursor?

    /// Queues, for a joining subscription, the events of its tail read that the shared poll saw before it joined.
    func queueTail(subscription: String, events: [Event], now: Timestamp) async throws -> EnqueueResult

    /// Ends a join: the subscription is current. Returns the listed events the tail read did not find.
    @discardableResult
    func finishJoin(_ subscription: String) async throws -> Int
}

extension StateStore: SubscriptionCursorStore {}

extension SubscriptionConfig {
    /// Where the subscription starts reading the first time it appears: nil for `now` (it joins the shared poll),
    /// else `startFrom`'s time, no later than `now` (a position ahead of the live cursor could not join).
    public func startPosition(now: Timestamp) -> Timestamp? {
        switch startFrom {
        case .now: nil
        case .earliest: Timestamp(millisecondsSinceEpoch: 0)
        case .time(let time): min(time, now)
        }
    }
}

extension SubscriptionCursor {
    /// Where a current subscription whose queue is full falls behind at an event of `time`, in a page that moves
    /// the live cursor from `liveBefore` to `liveAfter`: neither re-reading what it was given nor skipping what it
    /// was not.
    /// - a late event (before the live cursor) falls behind at the live cursor, and is queued (it is before it);
    /// - an event of this live page falls behind just after the event's millisecond, and is queued, so that events
    ///   of that millisecond that follow are queued too rather than read again;
    /// - an event stamped past where this page leaves the live cursor (a device with a wrong clock) falls behind
    ///   there, not at its time: a position years ahead would never let it join.
    public static func fallBehindPosition(at time: Int64, liveBefore: Int64, liveAfter: Int64) -> Int64 {
        time < liveBefore ? liveBefore : min(time + 1, liveAfter)
    }
}
