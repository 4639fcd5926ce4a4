import Synchronization

/// What a source's poller last saw, for logs, `/readyz` and metrics.
public final class SourceHealth: Sendable {
    /// A snapshot.
    public struct Snapshot: Sendable, Equatable {
        /// When the last poll that reached the end of the events succeeded.
        public var lastCaughtUpAt: Timestamp?
        /// When any page last succeeded.
        public var lastSuccessAt: Timestamp?
        /// Failed requests in a row.
        public var consecutiveFailures = 0
        /// Why the source is unhealthy, if it is.
        public var problem: String?
        /// The live cursor after the last live poll.
        public var cursor: Timestamp?
        /// The settle mark: every event before it has been read `lookback` after its time.
        public var settled: Timestamp?
        /// Pages fetched, events read, and duplicates dropped since start.
        public var pages = 0
        public var eventsRead = 0
        public var duplicates = 0
        /// Events read for the first time (each is queued for every subscription it matches).
        public var newEvents = 0
        public var windowRestarts = 0
        /// Pages asked for ahead of a walk that it did not use: it ended, restarted its query, or failed first.
        public var pagesAskedAheadUnused = 0
        /// Events skipped because the relay could not read or place their id or time, by reason.
        public var skipped: [EventPageDecoder.SkipReason: Int] = [:]
    }

    private let state = Mutex(Snapshot())
    private let logged = Mutex(Set<EventPageDecoder.SkipReason>())

    /// An empty record.
    public init() {}

    /// The current state.
    public var snapshot: Snapshot { state.withLock { $0 } }

    func update(_ change: (inout Snapshot) -> Void) { state.withLock { change(&$0) } }

    /// True the first time a skip reason is seen: each kind is logged once.
    func markLogged(_ reason: EventPageDecoder.SkipReason) -> Bool {
        logged.withLock { $0.insert(reason).inserted }
    }
}
