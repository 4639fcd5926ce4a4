import Foundation
import RelayCore
import Synchronization
import Testing

/// The shared poll reads on while a page commit runs, and commits the pages read meanwhile in one transaction,
/// unless deliveries are behind.
@Suite struct PageGroupingTests {
    static let all = IngestFixture.subscription("all")

    @Test func pagesReadWhileACommitRunsGoInOneCommitOfAtMostTenPages() async throws {
        try await withIngest { fixture in
            fixture.api.log.addBacklog(count: 2_500, from: ingestEpoch - 3_600_000, to: ingestEpoch - 120_000)
            // A long queue of a subscription this source does not feed says nothing about this poll's deliveries.
            _ = try await fixture.store.enqueue(
                source: "other", events: Self.queued(5_000, "other", for: "elsewhere"), advance: MarkAdvance(), now: fixture.now)
            let store = GatedCommitStore(fixture.store, holding: 2)
            let poller = fixture.poller(fixture.source(rateLimit: RateLimit(perSecond: 10_000, burst: 10_000)), [Self.all], store: store)
            let poll = Task { try await poller.pollLive() }
            // The first commit is held: the walk reads on, ten pages and no further, before it waits for it. So it
            // does while the second is held. (The API may have answered a few pages more: the walk asks ahead.)
            try #require(try await eventually { poller.health.snapshot.pages >= 11 })
            try #require(try await eventually { store.releaseOne() })
            try #require(try await eventually { poller.health.snapshot.pages >= 21 })
            try #require(try await eventually { store.releaseOne() })
            _ = try await poll.value
            let commits = store.pagesPerCommit
            #expect(commits.prefix(3) == [1, 10, 10])
            #expect(commits.allSatisfy { $0 <= 10 })
            #expect(commits.reduce(0, +) == poller.health.snapshot.pages, "every page read is committed")
            #expect(try await fixture.store.queuedEventIDs(subscription: "all") == fixture.expectedIDs)
        }
    }

    @Test func aPollWhoseDeliveriesAreBehindCommitsPageByPage() async throws {
        try await withIngest { fixture in
            fixture.api.log.addBacklog(count: 2_500, from: ingestEpoch - 3_600_000, to: ingestEpoch - 120_000)
            // The subscription has 1,000 events queued from before: the relay delivers slower than it reads. They are
            // queued without moving the source's marks, so that the poll still reads the whole backlog.
            let earlier = Self.queued(1_000, "earlier", for: "all")
            _ = try await fixture.store.enqueue(source: "acme", events: earlier, advance: MarkAdvance(), now: fixture.now)
            let store = GatedCommitStore(fixture.store, holding: 2)
            let poller = fixture.poller(fixture.source(rateLimit: RateLimit(perSecond: 10_000, burst: 10_000)), [Self.all], store: store)
            let poll = Task { try await poller.pollLive() }
            // Before the first commit says how long the queues are, the walk reads ahead as usual...
            try #require(try await eventually { poller.health.snapshot.pages >= 11 })
            try #require(try await eventually { store.releaseOne() })
            // ...after it, it waits for each commit: while the second is held it reads one page, not ten.
            try #require(try await eventually { store.releaseOne() })
            _ = try await poll.value
            let commits = store.pagesPerCommit
            #expect(commits.prefix(3) == [1, 10, 1])
            #expect(commits.reduce(0, +) == poller.health.snapshot.pages, "every page read is committed")
            #expect(try await fixture.store.queuedEventIDs(subscription: "all") == earlier.map(\.event.id) + fixture.expectedIDs)
        }
    }

    /// `count` events two hours before the epoch, one a millisecond, for `subscription`.
    static func queued(_ count: Int, _ prefix: String, for subscription: String) -> [RoutedEvent] {
        (0..<count).map { index in
            RoutedEvent(
                event: Event(
                    id: "\(prefix)-\(index)", time: Timestamp(millisecondsSinceEpoch: ingestEpoch - 7_200_000 + Int64(index)),
                    action: "a", timeValue: .null, raw: Array("{}".utf8)),
                subscriptions: [subscription])
        }
    }

    @Test func pagesReadAreCommittedWhileTheNextFetchFailsAndBacksOff() async throws {
        try await withIngest { fixture in
            fixture.api.log.addBacklog(count: 2_500, from: ingestEpoch - 3_600_000, to: ingestEpoch - 120_000)
            let store = GatedCommitStore(fixture.store, holding: 1)
            let poller = fixture.poller(fixture.source(rateLimit: RateLimit(perSecond: 10_000, burst: 10_000)), [Self.all], store: store)
            let poll = Task { try await poller.pollLive() }
            // Pages wait behind the held commit; then the API fails every request, and the commit is let go.
            try #require(try await eventually { poller.health.snapshot.pages >= 3 })
            fixture.api.update { $0.faults.unavailable = 1 }
            try #require(try await eventually { store.releaseOne() })
            let deadline = ContinuousClock.now.advanced(by: .seconds(20))
            var queued = 0
            while ContinuousClock.now < deadline {
                queued = try await fixture.store.queueDepth("all")
                if fixture.api.counts.byStatus[503, default: 0] >= 3, queued == poller.health.snapshot.eventsRead { break }
                try await Task.sleep(for: .milliseconds(1))
            }
            poll.cancel()
            _ = try? await poll.value
            #expect(fixture.api.counts.byStatus[503, default: 0] >= 3)
            #expect(poller.health.snapshot.eventsRead >= 300)
            #expect(queued == poller.health.snapshot.eventsRead, "every event read is queued while the API fails")
        }
    }
}

/// Whether `condition` came to hold within 20 s, asked every millisecond: a test that goes wrong fails instead of
/// hanging, and waiting does not take the cooperative pool from the other suites running beside it.
func eventually(_ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now.advanced(by: .seconds(20))
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(1))
    }
    return false
}

/// The real store, whose first `holding` page commits wait until the test releases them, one at a time, and which
/// counts the pages of each commit.
final class GatedCommitStore: SourceStore {
    private struct State {
        var held: Int
        var waiting: [CheckedContinuation<Void, Never>] = []
        var pagesPerCommit: [Int] = []
    }

    private let store: StateStore
    private let state: Mutex<State>

    init(_ store: StateStore, holding: Int) {
        self.store = store
        state = Mutex(State(held: holding))
    }

    var pagesPerCommit: [Int] { state.withLock { $0.pagesPerCommit } }

    /// Lets the commit that has waited longest go on; false when none is waiting.
    func releaseOne() -> Bool {
        let released = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.waiting.isEmpty ? nil : state.waiting.removeFirst()
        }
        released?.resume()
        return released != nil
    }

    func enqueue(source: String, pages: [PageCommit], queueLimits: [String: Int], now: Timestamp) async throws -> EnqueueResult {
        let hold = state.withLock { state -> Bool in
            state.pagesPerCommit.append(pages.count)
            guard state.held > 0 else { return false }
            state.held -= 1
            return true
        }
        if hold {
            await withCheckedContinuation { continuation in state.withLock { $0.waiting.append(continuation) } }
        }
        return try await store.enqueue(source: source, pages: pages, queueLimits: queueLimits, now: now)
    }

    func enqueue(
        source: String, events: [RoutedEvent], advance: MarkAdvance, skipped: [EventPageDecoder.SkipReason: Int],
        queueLimits: [String: Int], now: Timestamp
    ) async throws -> EnqueueResult {
        try await enqueue(source: source, pages: [PageCommit(events: events, advance: advance, skipped: skipped)], queueLimits: queueLimits, now: now)
    }

    func marks(of source: String) async throws -> SourceMarks? { try await store.marks(of: source) }

    func initializeMarks(of source: String, at position: Timestamp, lookback: Duration, now: Timestamp) async throws -> SourceMarks {
        try await store.initializeMarks(of: source, at: position, lookback: lookback, now: now)
    }

    func advanceSettled(source: String, to position: Timestamp) async throws { try await store.advanceSettled(source: source, to: position) }

    func pruneSeen(source: String) async throws -> Int { try await store.pruneSeen(source: source) }

    func queueDepth(_ subscription: String) async throws -> Int { try await store.queueDepth(subscription) }
}
