/// Where the rows of subscriptions that left the config are kept track of (SPEC "Subscription cursors",
/// orphans): reported at start and reload, shown by `status`, purged on request or once `orphanRetention` has
/// passed, and taken up again when the name comes back. SQLite's ``StateStore`` and PostgreSQL's store provide it.
public protocol OrphanStore: Sendable {
    /// Records which stored names the config no longer has (at start and at each reload): a name found missing is
    /// an orphan from `now` on, a name back in the config is one no longer.
    func reconcileOrphans(current: [String], now: Timestamp) async throws -> OrphanReconciliation

    /// The orphans, by name, with their counts.
    func orphans() async throws -> [Orphan]

    /// Deletes the rows of orphans that became orphans more than `retention` before `now`; the names deleted.
    func pruneOrphans(olderThan retention: Duration, now: Timestamp) async throws -> [String]

    /// Deletes everything stored under a name the config no longer has; the queued events and dead letters deleted.
    func purgeOrphan(_ subscription: String) async throws -> (queued: Int, deadLetters: Int)
}

extension StateStore: OrphanStore {}
