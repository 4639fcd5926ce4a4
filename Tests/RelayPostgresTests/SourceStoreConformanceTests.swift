import CurlHTTP
import Foundation
import IntilerySimulator
import Logging
import PostgresNIO
import RelayCore
import RelayJSON
import RelayPostgres
import Testing

/// The state stores a poller can write to. Each conformance test runs on every one this machine has: SQLite always,
/// PostgreSQL under `scripts/with-postgres` (as `make test` runs).
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres

    static var available: [StoreKind] { TestDatabase.available ? allCases : [.sqlite] }
    var testDescription: String { rawValue }
}

/// A fresh store of `kind` for the source `acme`: SQLite in a temporary directory, or PostgreSQL in a schema of
/// its own with this instance holding the source's lease.
func withSourceStore<T>(_ kind: StoreKind, _ body: (any SourceStore) async throws -> T) async throws -> T {
    switch kind {
    case .sqlite:
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("relay-conformance-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        return try await body(StateStore.open(directory: directory.path))
    case .postgres:
        return try await TestDatabase.withClient { client, schema in
            let database = TestDatabase.database(client, schema)
            try await PostgresSchema.migrate(database)
            let store = PostgresSourceStore(database)
            let lease = try #require(
                try await PostgresLeases(database).acquire(PostgresSourceStore.leaseKey(of: "acme"), for: "relay-1", ttl: .seconds(300)))
            store.hold(lease, for: "acme")
            return try await body(store)
        }
    }
}

/// The simulated Events API with a backlog of `backlog` events over the hour before the last two minutes, and an
/// HTTP client, both stopped when `body` ends.
func withSimulatedAPI(backlog: Int, _ body: (FakeEventsAPI, CurlHTTPClient, _ now: Int64) async throws -> Void) async throws {
    var settings = FakeEventsAPI.Settings()
    settings.rateLimit = nil
    let api = try await FakeEventsAPI.start(settings: settings)
    let http = CurlHTTPClient()
    let now = Int64(Date().timeIntervalSince1970 * 1000)
    api.log.addBacklog(count: backlog, from: now - 3_600_000, to: now - 120_000)
    let result: Result<Void, any Error>
    do {
        try await body(api, http, now)
        result = .success(())
    } catch {
        result = .failure(error)
    }
    await http.shutdown()
    try await api.shutdown()
    try result.get()
}

/// Every store a poller writes to keeps the same promises: a page commits whole, an event is queued once however
/// often it is read, marks never move back, and seen ids are kept exactly as long as a read may return them.
@Suite struct SourceStoreConformanceTests {
    static let start = Timestamp(millisecondsSinceEpoch: 1_714_521_600_000)

    static func at(_ offset: Int64) -> Timestamp { Timestamp(millisecondsSinceEpoch: start.millisecondsSinceEpoch + offset) }

    /// `e0` for a, `e1` for a and b, `e2` for nobody, `e3` for b (each id after `prefix`); one a millisecond from
    /// `first`.
    static func page(from first: Int64 = 0, prefix: String = "") -> [RoutedEvent] {
        zip(0..<4, [["a"], ["a", "b"], [], ["b"]]).map { index, subscriptions in
            let time = at(first + Int64(index))
            let event = Event(
                id: "\(prefix)e\(index)", time: time, action: "click", timeValue: .string(time.iso8601), 
                raw: Array(#"{"eventID":"e\#(index)"}"#.utf8))
            return RoutedEvent(event: event, subscriptions: subscriptions)
        }
    }

    static func commit(
        _ store: any SourceStore, _ events: [RoutedEvent], _ advance: MarkAdvance
    ) async throws -> EnqueueResult {
        try await store.enqueue(source: "acme", events: events, advance: advance, skipped: [:], queueLimits: [:], now: at(0))
    }

    @Test(arguments: StoreKind.available)
    func theFirstMarksAreSetOnceWithTheSeenHorizonJustBefore(_ kind: StoreKind) async throws {
        try await withSourceStore(kind) { store in
            #expect(try await store.marks(of: "acme") == nil)
            let first = try await store.initializeMarks(of: "acme", at: Self.at(0), lookback: .seconds(60), now: Self.at(0))
            #expect(first == SourceMarks(live: Self.at(0), settled: Self.at(0), seenHorizon: Self.at(-1)))
            // A restart with another `startFrom` keeps what is stored.
            let again = try await store.initializeMarks(of: "acme", at: Self.at(5_000), lookback: .seconds(60), now: Self.at(9))
            #expect(again == first)
            #expect(try await store.marks(of: "acme") == first)
        }
    }

    @Test(arguments: StoreKind.available)
    func aPageIsQueuedOnceAndTheMarksOnlyMoveForward(_ kind: StoreKind) async throws {
        try await withSourceStore(kind) { store in
            _ = try await store.initializeMarks(of: "acme", at: Self.at(-10_000), lookback: .seconds(60), now: Self.at(0))
            let first = try await Self.commit(store, Self.page(), MarkAdvance(live: Self.at(100), settled: Self.at(-5_000)))
            #expect(first == EnqueueResult(newEvents: 4, duplicates: 0, queued: 4))
            #expect(try await store.queueDepth("a") == 2)
            #expect(try await store.queueDepth("b") == 2)
            // Read again (a lookback, a window restart): nothing queued twice, and marks never move back.
            let again = try await Self.commit(store, Self.page(), MarkAdvance(live: Self.at(50), settled: Self.at(-9_000)))
            #expect(again == EnqueueResult(newEvents: 0, duplicates: 4, queued: 0))
            #expect(try await store.queueDepth("a") == 2)
            var marks = try #require(try await store.marks(of: "acme"))
            #expect(marks.live == Self.at(100) && marks.settled == Self.at(-5_000))
            // A live walk settles only when it began at or before the settle mark: otherwise it would leave a gap.
            _ = try await Self.commit(store, [], MarkAdvance(live: Self.at(200), settled: Self.at(-1_000), settledOnlyFrom: Self.at(-4_000)))
            marks = try #require(try await store.marks(of: "acme"))
            #expect(marks.live == Self.at(200) && marks.settled == Self.at(-5_000))
            _ = try await Self.commit(store, [], MarkAdvance(live: Self.at(200), settled: Self.at(-1_000), settledOnlyFrom: Self.at(-6_000)))
            #expect(try await store.marks(of: "acme")?.settled == Self.at(-1_000))
        }
    }

    /// Pages read while a commit ran are committed together: each as its own commit would have been.
    @Test(arguments: StoreKind.available)
    func pagesCommittedTogetherDoWhatOneCommitEachWould(_ kind: StoreKind) async throws {
        try await withSourceStore(kind) { store in
            _ = try await store.initializeMarks(of: "acme", at: Self.at(-10_000), lookback: .seconds(60), now: Self.at(0))
            let later = Self.page(from: 100, prefix: "later-")
            let result = try await store.enqueue(
                source: "acme",
                pages: [
                    PageCommit(events: Self.page(), advance: MarkAdvance(live: Self.at(50), settled: Self.at(-5_000), settledOnlyFrom: Self.at(-10_000))),
                    // The same events again (a window restart reads the last millisecond twice), then new ones; this
                    // page's settle mark applies only from a position the first page's has passed.
                    PageCommit(
                        events: Self.page() + later,
                        advance: MarkAdvance(live: Self.at(200), settled: Self.at(-1_000), settledOnlyFrom: Self.at(-6_000))),
                    // Marks never move back, whatever order a page gives them in.
                    PageCommit(events: [], advance: MarkAdvance(live: Self.at(150), settled: Self.at(-2_000))),
                ],
                queueLimits: [:], now: Self.at(0))
            #expect(result == EnqueueResult(newEvents: 8, duplicates: 4, queued: 8))
            if kind == .sqlite {
                // What the dispatchers are handed in memory, as they would read it back.
                #expect(result.handOff["a"]?.map(\.eventID) == ["e0", "e1", "later-e0", "later-e1"])
            }
            #expect(try await store.queueDepth("a") == 4)
            #expect(try await store.queueDepth("b") == 4)
            let marks = try #require(try await store.marks(of: "acme"))
            #expect(marks.live == Self.at(200) && marks.settled == Self.at(-1_000))
            // Committed: read again, every event is a duplicate.
            #expect(try await Self.commit(store, Self.page() + later, MarkAdvance()).duplicates == 8)
        }
    }

    @Test(arguments: StoreKind.available)
    func theSettleMarkNeverPassesTheLiveCursorNorMovesBack(_ kind: StoreKind) async throws {
        try await withSourceStore(kind) { store in
            _ = try await store.initializeMarks(of: "acme", at: Self.at(0), lookback: .seconds(60), now: Self.at(0))
            _ = try await Self.commit(store, [], MarkAdvance(live: Self.at(1_000)))
            try await store.advanceSettled(source: "acme", to: Self.at(500))
            #expect(try await store.marks(of: "acme")?.settled == Self.at(500))
            try await store.advanceSettled(source: "acme", to: Self.at(100))
            #expect(try await store.marks(of: "acme")?.settled == Self.at(500))
            try await store.advanceSettled(source: "acme", to: Self.at(9_000))
            #expect(try await store.marks(of: "acme")?.settled == Self.at(1_000))
        }
    }

    @Test(arguments: StoreKind.available)
    func seenIdsAreKeptUntilASecondBeforeTheLowerMark(_ kind: StoreKind) async throws {
        try await withSourceStore(kind) { store in
            _ = try await store.initializeMarks(of: "acme", at: Self.at(0), lookback: .seconds(60), now: Self.at(0))
            // Four events at 0..3 ms and four at 10,000..10,003 ms; the marks end at 12 s live and 11 s settled.
            let early = Self.page(from: 0)
            let late = Self.page(from: 10_000, prefix: "late-")
            _ = try await Self.commit(store, early + late, MarkAdvance(live: Self.at(12_000), settled: Self.at(11_000)))
            #expect(try await store.pruneSeen(source: "acme") == 4, "ids before 10 s (11 s less a second) go")
            #expect(try await store.marks(of: "acme")?.seenHorizon == Self.at(10_000))
            // What is kept still dedupes; the horizon never moves back.
            #expect(try await Self.commit(store, late, MarkAdvance()).duplicates == 4)
            #expect(try await store.pruneSeen(source: "acme") == 0)
            #expect(try await store.marks(of: "acme")?.seenHorizon == Self.at(10_000))
        }
    }

    /// The real poller against the simulated API, writing to each store: a backlog queued once, in time order, the
    /// cursor caught up, and a second poll adding nothing.
    @Test(arguments: StoreKind.available)
    func aPollerQueuesABacklogOnceOnEveryStore(_ kind: StoreKind) async throws {
        try await withSimulatedAPI(backlog: 2_500) { api, http, now in
            try await withSourceStore(kind) { store in
                let poller = Self.poller(api: api, http: http, store: store)
                let cursor = try await poller.pollLive()
                #expect(try await store.queueDepth("all") == 2_500)
                #expect(cursor > Timestamp(millisecondsSinceEpoch: now - 1_000), "caught up to the API's now")
                let marks = try #require(try await store.marks(of: "acme"))
                #expect(marks.settled > Timestamp(millisecondsSinceEpoch: now - 120_000), "a backlog read late settles as it goes")
                try await poller.pollLive()
                #expect(try await store.queueDepth("all") == 2_500)
            }
        }
    }

    static func poller(api: FakeEventsAPI, http: CurlHTTPClient, store: any SourceStore) -> Poller<ContinuousClock> {
        var source = SourceConfig(
            name: "acme", clientId: api.account.clientId, accountId: api.account.accountId, brandId: api.account.brandId,
            authToken: Secret(api.account.authToken, origin: .literal))
        source.baseURL = api.baseURL
        source.startFrom = .earliest
        source.pageSize = 100
        let all = SubscriptionConfig(name: "all", source: "acme", webhook: WebhookConfig(url: "http://127.0.0.1:9/all"))
        let time = RelayTime.system
        let client = EventsAPIClient(
            source: source, subscriptions: [all], http: http, limiter: APIRateLimiters(clock: time.clock).limiter(for: source),
            now: time.now)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return Poller(source: source, subscriptions: [all], store: store, client: client, time: time, logger: logger)
    }
}

/// The poller on PostgreSQL writes only while its instance holds the source's lease.
@Suite(.enabled(if: TestDatabase.available, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
struct PostgresPollerLeaseTests {
    @Test func aPollerWhoseLeaseWasTakenOverCommitsNothingAndTheNewHolderQueuesEachEventOnce() async throws {
        try await withSimulatedAPI(backlog: 500) { api, http, _ in
            try await TestDatabase.withClient { client, schema in
                let database = TestDatabase.database(client, schema)
                try await PostgresSchema.migrate(database)
                let leases = PostgresLeases(database)
                let key = PostgresSourceStore.leaseKey(of: "acme")
                let (stalled, holder) = (PostgresSourceStore(database), PostgresSourceStore(database))
                // Bound first: passed straight to `hold`, which takes an optional, `#require` checked nothing.
                let first = try #require(try await leases.acquire(key, for: "relay-1", ttl: .seconds(300)))
                stalled.hold(first, for: "acme")
                let stalledPoller = SourceStoreConformanceTests.poller(api: api, http: http, store: stalled)
                try await stalledPoller.startingMarks()
                // relay-1 stalls past its lease; relay-2 takes the source over.
                try await TestDatabase.expire(key, schema: schema, client)
                let second = try #require(try await leases.acquire(key, for: "relay-2", ttl: .seconds(300)))
                holder.hold(second, for: "acme")

                await #expect(throws: LeaseLost.self) { try await stalledPoller.pollLive() }
                #expect(try await stalled.queueDepth("all") == 0, "the former holder queued nothing")
                let cursor = try await SourceStoreConformanceTests.poller(api: api, http: http, store: holder).pollLive()
                #expect(try await holder.queueDepth("all") == 500)
                #expect(try await holder.marks(of: "acme")?.live == cursor)
                // An instance that holds no lease on the source writes nothing either.
                stalled.hold(nil, for: "acme")
                await #expect(throws: SourceNotHeld(source: "acme")) { try await stalledPoller.pollLive() }
                #expect(try await holder.marks(of: "acme")?.live == cursor)
            }
        }
    }
}
