import Synchronization
import RelayCore

/// A source's polling state on PostgreSQL, for the ``Poller``: every write is fenced by the source's lease as this
/// instance holds it now, so a poller whose lease was taken over (it stalled, or lost the network) commits nothing.
///
/// Subscription cursors (catch-up, replays) and `maxQueued` are SQLite's only so far: on PostgreSQL every
/// subscription is fed by the shared poll, and a queue is not bounded.
public final class PostgresSourceStore: SourceStore {
    private let ingest: PostgresIngest
    private let held = Mutex<[String: Lease]>([:])

    /// The state of the sources in `database`.
    public init(_ database: RelayDatabase) {
        ingest = PostgresIngest(database)
    }

    /// The lease key of a source.
    public static func leaseKey(of source: String) -> String { "source/\(source)" }

    /// Writes for `source` go under `lease` from now on (nil: none may, until a lease is held again).
    public func hold(_ lease: Lease?, for source: String) {
        held.withLock { $0[source] = lease }
    }

    private func lease(of source: String) throws -> Lease {
        guard let lease = held.withLock({ $0[source] }) else { throw SourceNotHeld(source: source) }
        return lease
    }

    public func marks(of source: String) async throws -> SourceMarks? {
        try await ingest.marks(of: source)
    }

    public func initializeMarks(of source: String, at position: Timestamp, lookback: Duration, now: Timestamp) async throws -> SourceMarks {
        try await ingest.initializeMarks(of: source, at: position, lookback: lookback, by: lease(of: source))
    }

    public func enqueue(
        source: String, events: [RoutedEvent], advance: MarkAdvance, skipped: [EventPageDecoder.SkipReason: Int],
        queueLimits: [String: Int], now: Timestamp
    ) async throws -> EnqueueResult {
        try await ingest.enqueue(source: source, events: events, advance: advance, by: lease(of: source), now: now)
    }

    public func advanceSettled(source: String, to position: Timestamp) async throws {
        try await ingest.advanceSettled(source: source, to: position, by: lease(of: source))
    }

    @discardableResult
    public func pruneSeen(source: String) async throws -> Int {
        try await ingest.pruneSeen(source: source, by: lease(of: source))
    }

    public func queueDepth(_ subscription: String) async throws -> Int {
        try await ingest.queueDepth(subscription)
    }
}

/// A write for a source this instance holds no lease on: nothing was written.
public struct SourceNotHeld: Error, Equatable, CustomStringConvertible {
    public let source: String

    /// No lease held on `source`.
    public init(source: String) { self.source = source }

    public var description: String { "this instance holds no lease on source \(source)" }
}
