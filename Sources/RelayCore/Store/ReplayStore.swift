/// Where `intilery-relay replay` records its requests and the poller of the subscription's source carries them
/// out: the range read anew from the API, page by page, each page's matching events queued again and the request's
/// position moved in one transaction. SQLite's ``StateStore`` and PostgreSQL's source store provide it.
public protocol ReplayStore: Sendable {
    /// Records a replay request; its id.
    func requestReplay(subscription: String, since: Timestamp, until: Timestamp, now: Timestamp) async throws -> Int64

    /// A replay request by id, or nil.
    func replayRequest(_ id: Int64) async throws -> ReplayRequest?

    /// The unfinished replay requests of these subscriptions, oldest first.
    func pendingReplays(of subscriptions: [String]) async throws -> [ReplayRequest]

    /// Queues a page of replay `id` (events of `source`) and moves its position to `through`, in one transaction;
    /// stops at the first event that finds the subscription's queue at `limit`, keeping its place there. An event
    /// still queued for the subscription is not queued twice; a delivered one is queued again.
    func queueReplay(_ id: Int64, source: String, events: [Event], through: Timestamp, limit: Int, now: Timestamp) async throws -> EnqueueResult

    /// Marks a replay done.
    func finishReplay(_ id: Int64, now: Timestamp) async throws

    /// How many deliveries are queued for `subscription`.
    func queueDepth(_ subscription: String) async throws -> Int
}

extension StateStore: ReplayStore {}
