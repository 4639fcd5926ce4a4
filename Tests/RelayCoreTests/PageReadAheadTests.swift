import Foundation
import IntilerySimulator
@testable import RelayCore
import Testing

/// A walk through a backlog asks for the next pages while it queues one; near the live edge it asks only for what a
/// walk one page at a time would.
@Suite struct PageReadAheadTests {
    static let all = IngestFixture.subscription("all")

    /// Each answer is held this long, so that the API sees which requests were asked before an earlier one was
    /// answered.
    static func slowAPI() throws -> FakeEventsAPI.Settings {
        var settings = FakeEventsAPI.Settings()
        settings.faults = try SimulatorFaults(parsing: "latency=20ms")
        return settings
    }

    @Test func aBacklogIsReadSeveralPagesAtOnceAndQueuedOnceInOrder() async throws {
        try await withIngest(settings: try Self.slowAPI()) { fixture in
            // 3,050 events ten minutes old and more: 30 full pages and a short one, all well behind the live edge.
            fixture.api.log.addBacklog(count: 3_050, from: ingestEpoch - 3_600_000, to: ingestEpoch - 600_000)
            let poller = fixture.poller(fixture.source(), [Self.all])
            try await poller.pollLive()

            #expect(try await fixture.store.queuedEventIDs(subscription: "all") == fixture.expectedIDs)
            let counts = fixture.api.counts
            // Asked ahead, but never more than the walk's depth at once.
            #expect(counts.mostAtOnce > 1)
            #expect(counts.mostAtOnce <= PageWalk<TestClock>.pagesAhead)
            // What a walk one page at a time asks (31 pages), and at most the pages it asked for beyond the short one
            // (some of which may have been cancelled before they reached the API).
            let unused = poller.health.snapshot.pagesAskedAheadUnused
            #expect(unused <= PageWalk<TestClock>.pagesAhead - 1)
            #expect((31...31 + unused).contains(counts.requests))
        }
    }

    @Test func nearTheLiveEdgeNoPageIsAskedForThatIsNotRead() async throws {
        try await withIngest(settings: try Self.slowAPI()) { fixture in
            // 1,050 events of the last 50 seconds: 10 full pages and a short one, all within a minute of now.
            fixture.api.log.addBacklog(count: 1_050, from: ingestEpoch - 50_000, to: ingestEpoch - 1_000)
            let poller = fixture.poller(fixture.source(), [Self.all])
            try await poller.pollLive()

            #expect(try await fixture.store.queuedEventIDs(subscription: "all") == fixture.expectedIDs)
            #expect(fixture.api.counts.requests == 11)
            #expect(poller.health.snapshot.pagesAskedAheadUnused == 0)
        }
    }

    @Test func aBacklogReachingTheLookbackIsReadOnePageAheadThereAndAsksForNothingUnread() async throws {
        try await withIngest(settings: try Self.slowAPI()) { fixture in
            // 3,050 events of the last five minutes: the early pages end well before the lookback (60 s) and a minute
            // more, the later ones do not, and the walk ends on the 31st, short. The subscription takes none of them,
            // so that no queue grows long enough to stop the walk asking ahead on its own account.
            fixture.api.log.addBacklog(count: 3_050, from: ingestEpoch - 300_000, to: ingestEpoch - 1_000)
            let poller = fixture.poller(fixture.source(), [IngestFixture.subscription("none", filter: .condition(FieldPath("properties.no_such_field")!, .eq, .string("x")))])
            try await poller.pollLive()

            #expect(poller.health.snapshot.eventsRead == 3_050)
            #expect(fixture.api.counts.mostAtOnce > 1)
            #expect(fixture.api.counts.requests == 31)
            #expect(poller.health.snapshot.pagesAskedAheadUnused == 0)
        }
    }

    @Test func theDepthFollowsHowOldThePagesAheadWouldBe() async throws {
        try await withIngest { fixture in
            let walk = fixture.poller(fixture.source(lookback: .seconds(60)), [Self.all]).walk
            let apiNow = Timestamp(millisecondsSinceEpoch: ingestEpoch)
            func page(_ first: Int64, _ last: Int64) -> WalkPage {
                let events = [first, last].map {
                    Event(id: "e\($0)", time: Timestamp(millisecondsSinceEpoch: ingestEpoch - $0), action: "a", timeValue: .null, raw: [])
                }
                return WalkPage(events: events, apiNow: apiNow, isLast: false, start: apiNow)
            }
            // 10 s a page: four more end 40 s later, 2 minutes before now at the latest (lookback and a minute).
            #expect(walk.aheadDepth(after: page(200_000, 190_000), end: nil) == PageWalk<TestClock>.pagesAhead)
            #expect(walk.aheadDepth(after: page(170_000, 160_000), end: nil) == 1)
            // The walk's end bounds them too.
            #expect(walk.aheadDepth(after: page(200_000, 190_000), end: apiNow.advanced(by: .seconds(-160))) == 1)
            // A page with nothing readable says nothing about what follows.
            #expect(walk.aheadDepth(after: WalkPage(events: [], apiNow: apiNow, isLast: false, start: apiNow), end: nil) == 1)
        }
    }

    @Test func aPageAskedAheadThatFailsIsAskedAgainAfterTheBackoff() async throws {
        var settings = try Self.slowAPI()
        settings.faults.internalError = 0.2
        try await withIngest(settings: settings) { fixture in
            fixture.api.log.addBacklog(count: 5_000, from: ingestEpoch - 3_600_000, to: ingestEpoch - 600_000)
            let poller = fixture.poller(fixture.source(), [Self.all])
            try await poller.pollLive()

            let counts = fixture.api.counts
            #expect((counts.byStatus[500] ?? 0) > 0)
            #expect(counts.mostAtOnce > 1)
            // Every failure was waited out before the walk asked again: nothing lost, nothing queued twice.
            #expect(fixture.clock.sleeps.count >= 1)
            #expect(try await fixture.store.queuedEventIDs(subscription: "all") == fixture.expectedIDs)
        }
    }
}
