/// What a source's poller needs of the state store: the source's marks, and one transaction per page that queues
/// its new events and moves the marks. SQLite's ``StateStore`` provides it for one instance; on PostgreSQL it is
/// provided under the source's lease, so that only the instance polling the source can commit a page. The
/// conformance tests hold every implementation to the same behaviour.
public protocol SourceStore: Sendable {
    /// A source's marks, or nil before its first start.
    func marks(of source: String) async throws -> SourceMarks?

    /// Sets a source's first marks at `position`, unless it has some; returns the marks in force.
    func initializeMarks(of source: String, at position: Timestamp, lookback: Duration, now: Timestamp) async throws -> SourceMarks

    /// Commits one page: events not seen before are queued for their subscriptions (one no subscription wants is
    /// only remembered as seen), and the marks move as `advance` says, never back.
    func enqueue(
        source: String, events: [RoutedEvent], advance: MarkAdvance, skipped: [EventPageDecoder.SkipReason: Int],
        queueLimits: [String: Int], now: Timestamp
    ) async throws -> EnqueueResult

    /// Commits pages in order, each as its own ``enqueue(source:events:advance:skipped:queueLimits:now:)`` would;
    /// a store may put them in one transaction.
    func enqueue(source: String, pages: [PageCommit], queueLimits: [String: Int], now: Timestamp) async throws -> EnqueueResult

    /// Moves the settle mark up to `position`, never past the live cursor nor back.
    func advanceSettled(source: String, to position: Timestamp) async throws

    /// Forgets the seen ids no read can return again (a second before the lower mark) and moves the seen-id
    /// horizon there; how many.
    @discardableResult
    func pruneSeen(source: String) async throws -> Int

    /// How many deliveries are queued for `subscription`.
    func queueDepth(_ subscription: String) async throws -> Int
}

extension SourceStore {
    /// One transaction per page.
    public func enqueue(source: String, pages: [PageCommit], queueLimits: [String: Int], now: Timestamp) async throws -> EnqueueResult {
        var result = EnqueueResult()
        for page in pages {
            result.add(
                try await enqueue(
                    source: source, events: page.events, advance: page.advance, skipped: page.skipped, queueLimits: queueLimits,
                    now: now))
        }
        return result
    }
}

extension StateStore: SourceStore {}
