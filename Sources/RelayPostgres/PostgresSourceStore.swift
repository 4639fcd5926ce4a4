import Synchronization
import RelayCore

/// A source's polling state on PostgreSQL, for the ``Poller``: every write is fenced by the source's lease as this
/// instance holds it now, so a poller whose lease was taken over (it stalled, or lost the network) commits nothing.
///
/// Replays and subscription cursors (a subscription reading on its own, behind the shared poll) are written here
/// too, each under the lease of the source they read.
public final class PostgresSourceStore: SourceStore, ReplayStore, SubscriptionCursorStore {
    private let ingest: PostgresIngest
    private let replays: PostgresReplays
    private let cursors: PostgresCursors
    private let held = Mutex<[String: Lease]>([:])
    /// The deadline of every call (``withQueryDeadline(_:_:whenCancelled:_:)``).
    private let limit: Duration

    /// The state of the sources in `database`; each call gives up after `limit`.
    public init(_ database: RelayDatabase, limit: Duration = .seconds(45)) {
        ingest = PostgresIngest(database)
        replays = PostgresReplays(database)
        cursors = PostgresCursors(database)
        self.limit = limit
    }

    /// The lease key of a source alone in its token group.
    public static func leaseKey(of source: String) -> String { "source/\(source)" }

    /// The sources of `sources` grouped by API token, each group in name order, the groups by their first name. One
    /// instance polls a whole group: the token's `rateLimit` is kept by one process's limiter, not one per instance.
    public static func tokenGroups(_ sources: [SourceConfig]) -> [[SourceConfig]] {
        Dictionary(grouping: sources, by: \.authToken.exposedValue).values
            .map { $0.sorted { $0.name < $1.name } }.sorted { $0[0].name < $1[0].name }
    }

    /// The lease a token group (one of ``tokenGroups(_:)``) is polled under, named after its first source, so that a
    /// source alone in its group keeps `source/NAME`. The token itself is never written to the database.
    public static func leaseKey(ofGroup group: [SourceConfig]) -> String { leaseKey(of: group[0].name) }

    /// The lease the source named `source` is polled under: its token group's among `sources`.
    public static func leaseKey(of source: String, among sources: [SourceConfig]) -> String {
        tokenGroups(sources).first { $0.contains { $0.name == source } }.map(leaseKey(ofGroup:)) ?? leaseKey(of: source)
    }

    /// Writes for `source` go under `lease` from now on (nil: none may, until a lease is held again).
    public func hold(_ lease: Lease?, for source: String) {
        held.withLock { $0[source] = lease }
    }

    private func lease(of source: String) throws -> Lease {
        guard let lease = held.withLock({ $0[source] }) else { throw SourceNotHeld(source: source) }
        return lease
    }

    public func marks(of source: String) async throws -> SourceMarks? {
        try await withQueryDeadline(limit, "reading the marks of \(source)") { [ingest] in try await ingest.marks(of: source) }
    }

    public func initializeMarks(of source: String, at position: Timestamp, lookback: Duration, now: Timestamp) async throws -> SourceMarks {
        let lease = try lease(of: source)
        return try await withQueryDeadline(limit, "setting the first marks of \(source)") { [ingest] in
            try await ingest.initializeMarks(of: source, at: position, lookback: lookback, by: lease)
        }
    }

    public func enqueue(
        source: String, events: [RoutedEvent], advance: MarkAdvance, skipped: [EventPageDecoder.SkipReason: Int],
        queueLimits: [String: Int], now: Timestamp
    ) async throws -> EnqueueResult {
        let lease = try lease(of: source)
        return try await withQueryDeadline(limit, "queueing \(events.count) events of \(source)") { [ingest] in
            try await ingest.enqueue(source: source, events: events, advance: advance, queueLimits: queueLimits, by: lease, now: now)
        }
    }

    public func advanceSettled(source: String, to position: Timestamp) async throws {
        let lease = try lease(of: source)
        try await withQueryDeadline(limit, "moving the settle mark of \(source)") { [ingest] in
            try await ingest.advanceSettled(source: source, to: position, by: lease)
        }
    }

    @discardableResult
    public func pruneSeen(source: String) async throws -> Int {
        let lease = try lease(of: source)
        return try await withQueryDeadline(limit, "pruning the seen ids of \(source)") { [ingest] in try await ingest.pruneSeen(source: source, by: lease) }
    }

    public func queueDepth(_ subscription: String) async throws -> Int {
        try await withQueryDeadline(limit, "counting the queue of \(subscription)") { [ingest] in try await ingest.queueDepth(subscription) }
    }

    public func requestReplay(subscription: String, since: Timestamp, until: Timestamp, now: Timestamp) async throws -> Int64 {
        try await withQueryDeadline(limit, "recording a replay of \(subscription)") { [replays] in
            try await replays.requestReplay(subscription: subscription, since: since, until: until, now: now)
        }
    }

    public func replayRequest(_ id: Int64) async throws -> ReplayRequest? {
        try await withQueryDeadline(limit, "reading replay request \(id)") { [replays] in try await replays.replayRequest(id) }
    }

    public func pendingReplays(of subscriptions: [String]) async throws -> [ReplayRequest] {
        try await withQueryDeadline(limit, "reading replay requests") { [replays] in try await replays.pendingReplays(of: subscriptions) }
    }

    public func queueReplay(_ id: Int64, source: String, events: [Event], through: Timestamp, limit: Int, now: Timestamp) async throws -> EnqueueResult {
        let lease = try lease(of: source)
        return try await withQueryDeadline(self.limit, "queueing \(events.count) replayed events of \(source)") { [replays] in
            try await replays.queueReplay(id, source: source, events: events, through: through, limit: limit, now: now, by: lease)
        }
    }

    public func finishReplay(_ id: Int64, now: Timestamp) async throws {
        try await withQueryDeadline(limit, "finishing replay request \(id)") { [replays] in try await replays.finishReplay(id, now: now) }
    }

    public func registerSubscriptions(_ subscriptions: [SubscriptionConfig], now: Timestamp) async throws -> [SubscriptionCursor] {
        try await withQueryDeadline(limit, "recording the subscriptions") { [cursors] in try await cursors.registerSubscriptions(subscriptions, now: now) }
    }

    public func subscriptionCursor(_ subscription: String) async throws -> SubscriptionCursor? {
        try await withQueryDeadline(limit, "reading the cursor of \(subscription)") { [cursors] in try await cursors.subscriptionCursor(subscription) }
    }

    public func subscriptionsNotCurrent(source: String) async throws -> [SubscriptionCursor] {
        try await withQueryDeadline(limit, "reading the subscriptions of \(source)") { [cursors] in try await cursors.subscriptionsNotCurrent(source: source) }
    }

    public func queueCatchUp(
        subscription: String, source: String, events: [Event], through: Timestamp, limit: Int, now: Timestamp
    ) async throws -> EnqueueResult {
        let lease = try lease(of: source)
        return try await withQueryDeadline(self.limit, "queueing \(events.count) events read for \(subscription)") { [cursors] in
            try await cursors.queueCatchUp(subscription: subscription, source: source, events: events, through: through, limit: limit, now: now, by: lease)
        }
    }

    public func beginJoin(_ subscription: String) async throws -> SubscriptionCursor? {
        guard let lease = try await leaseOfSource(of: subscription) else { return nil }
        return try await withQueryDeadline(limit, "joining \(subscription) to the shared poll") { [cursors] in
            try await cursors.beginJoin(subscription, by: lease)
        }
    }

    public func queueTail(subscription: String, events: [Event], now: Timestamp) async throws -> EnqueueResult {
        guard let cursor = try await subscriptionCursor(subscription) else { return EnqueueResult() }
        let lease = try lease(of: cursor.source)
        return try await withQueryDeadline(limit, "queueing the tail read for \(subscription)") { [cursors] in
            try await cursors.queueTail(subscription: subscription, source: cursor.source, events: events, now: now, by: lease)
        }
    }

    @discardableResult
    public func finishJoin(_ subscription: String) async throws -> Int {
        guard let lease = try await leaseOfSource(of: subscription) else { return 0 }
        return try await withQueryDeadline(limit, "finishing the join of \(subscription)") { [cursors] in
            try await cursors.finishJoin(subscription, by: lease)
        }
    }

    /// The lease held on the source of `subscription`'s cursor; nil when it has none.
    private func leaseOfSource(of subscription: String) async throws -> Lease? {
        guard let cursor = try await subscriptionCursor(subscription) else { return nil }
        return try lease(of: cursor.source)
    }
}

/// A write for a source this instance holds no lease on: nothing was written.
public struct SourceNotHeld: Error, Equatable, CustomStringConvertible {
    public let source: String

    /// No lease held on `source`.
    public init(source: String) { self.source = source }

    public var description: String { "this instance holds no lease on source \(source)" }
}
