/// Decides what a subscription sends next: the rules of ordering and batching, with no HTTP and no SQL, so that
/// they can be tested over every arrival order, failure and retry.
///
/// The rules:
/// - A row that is being sent, or whose outcome is not committed yet, is never planned again.
/// - A batch's members, their order and its id are fixed when it is composed, before its first attempt; a batch
///   read back is sent whole, in its stored order, never recomposed.
/// - Strict: one request at a time, always the head of line (the earliest queued event, by event time then row),
///   and only when it is due; nothing goes while the last head failed and its new schedule is not committed.
public struct DeliveryPlanner: Sendable {
    /// What the dispatcher has out, as the planner needs it.
    public struct InFlight: Sendable, Equatable {
        /// Requests being sent.
        public var requests = 0
        /// Rows being sent or whose outcome is not committed: not to be planned again.
        public var unsettled: Set<Int64> = []
        /// Strict only: the last head failed and its new schedule is not committed yet.
        public var failedHeadPending = false

        public init(requests: Int = 0, unsettled: Set<Int64> = [], failedHeadPending: Bool = false) {
            self.requests = requests
            self.unsettled = unsettled
            self.failedHeadPending = failedHeadPending
        }
    }

    /// One request to send.
    public struct Request: Sendable, Equatable {
        /// Its rows, in body order.
        public var deliveries: [Delivery]
        /// Set when the request is a batch composed now: its id, to be stored with the members' order before the
        /// first attempt.
        public var composedBatch: String?
    }

    public let subscription: String
    public let strict: Bool
    public let batchSize: Int
    /// Requests a subscription may have out at once.
    public let slots: Int

    public init(subscription: String, strict: Bool, batchSize: Int, concurrency: Int) {
        self.subscription = subscription
        self.strict = strict
        self.batchSize = max(batchSize, 1)
        slots = strict ? 1 : max(concurrency, 1)
    }

    public init(_ subscription: SubscriptionConfig) {
        self.init(
            subscription: subscription.name, strict: subscription.webhook.ordering == .strict,
            batchSize: subscription.webhook.batchSize, concurrency: subscription.webhook.concurrency)
    }

    /// How many requests may start now; zero means there is no point in reading the outbox.
    public func freeSlots(_ inFlight: InFlight) -> Int {
        if strict && inFlight.failedHeadPending { return 0 }
        return max(slots - inFlight.requests, 0)
    }

    /// How many rows to read for `requests` requests.
    public func rowsToRead(for requests: Int) -> Int { requests * batchSize }

    /// What to send next from `rows`, read from the outbox as ``StateStore/deliveries(subscription:due:limit:strict:excluding:)``
    /// returns them (due ones in due order; with `strict`, the earliest by event time, due or not; batches whole),
    /// at most `wanted` requests (and never more than the free slots), then up to `ahead` more for slots that are
    /// not free yet: only batches composed before or full ones, so that composing early never makes batches smaller.
    public func plan(_ rows: [Delivery], inFlight: InFlight, now: Timestamp, wanted: Int = .max, ahead: Int = 0) -> [Request] {
        let free = min(wanted, freeSlots(inFlight))
        let count = strict || batchSize == 1 ? free : free + max(ahead, 0)
        guard count > 0 else { return [] }
        let rows = rows.filter { !inFlight.unsettled.contains($0.id) }
        if strict { return strictHead(rows, now: now).map { [$0] } ?? [] }
        if batchSize == 1 { return rows.prefix(count).map { Request(deliveries: [$0]) } }

        // Batches already composed go as they are; the loose rows are composed into new ones in read order.
        var requests: [Request] = []
        var composed: [String: [Delivery]] = [:]
        var batchOrder: [String] = []
        var loose: [Delivery] = []
        for row in rows {
            guard let batch = row.batchID else {
                loose.append(row)
                continue
            }
            if composed[batch] == nil { batchOrder.append(batch) }
            composed[batch, default: []].append(row)
        }
        requests += batchOrder.map { Request(deliveries: Self.inOrder(composed[$0]!, by: Self.storedOrder)) }
        var index = 0
        while index < loose.count && requests.count < count {
            let chunk = Array(loose[index..<min(index + batchSize, loose.count)])
            if requests.count >= free && chunk.count < batchSize { break }
            index += chunk.count
            requests.append(compose(chunk))
        }
        return Array(requests.prefix(count))
    }

    /// The head of line when it is due: its whole batch as composed when it has one (a batch goes at its first
    /// member's place); otherwise the loose events from the head on, up to `batchSize`, stopping at the first
    /// batched or not yet due one.
    private func strictHead(_ rows: [Delivery], now: Timestamp) -> Request? {
        let ordered = rows.sorted(by: Self.lineOrder)
        guard let head = ordered.first, head.nextAttemptAt <= now else { return nil }
        if let batch = head.batchID {
            return Request(deliveries: ordered.filter { $0.batchID == batch }.sorted(by: Self.storedOrder))
        }
        if batchSize == 1 { return Request(deliveries: [head]) }
        return compose(Array(ordered.prefix { $0.batchID == nil && $0.nextAttemptAt <= now }.prefix(batchSize)))
    }

    /// A new batch of `rows`, in event-time order, under an id made from its members.
    private func compose(_ rows: [Delivery]) -> Request {
        let members = Self.inOrder(rows, by: Self.lineOrder)
        let batchID = WebhookRequestBuilder.webhookID(subscription: subscription, eventIDs: members.map(\.eventID), batched: true)
        return Request(
            deliveries: members.enumerated().map { position, row in
                var row = row
                row.batchID = batchID
                row.batchPosition = position
                return row
            },
            composedBatch: batchID)
    }

    /// `rows` sorted by `order`, as given when they are in order already: rows come from the store or the poller
    /// in that order nearly always, and sorting copies each one (a retain per reference it holds) for nothing.
    static func inOrder(_ rows: [Delivery], by order: (Delivery, Delivery) -> Bool) -> [Delivery] {
        for index in rows.indices.dropFirst() where order(rows[index], rows[index - 1]) {
            return rows.sorted(by: order)
        }
        return rows
    }

    /// Strict order: event time, then the order rows were queued in.
    static func lineOrder(_ a: Delivery, _ b: Delivery) -> Bool { (a.eventTime, a.id) < (b.eventTime, b.id) }

    /// A composed batch's body order, as stored.
    static func storedOrder(_ a: Delivery, _ b: Delivery) -> Bool {
        (a.batchPosition ?? 0, a.eventTime, a.id) < (b.batchPosition ?? 0, b.eventTime, b.id)
    }
}
