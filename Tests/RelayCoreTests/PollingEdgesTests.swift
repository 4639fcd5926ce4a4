import IntilerySimulator
import RelayCore
import Testing

/// The two edges (docs/architecture.md, "How polling works"): what a steady stream costs, late events, a cursor that never runs ahead of
/// the API, times that cannot be placed, and lookback changes. All on the test clock against the fake API.
@Suite struct PollingEdgesTests {
    static let all = IngestFixture.subscription("all")

    /// Both edges once a second for `seconds`, as `run()` does, on the test clock.
    func poll(_ poller: Poller<TestClock>, _ fixture: IngestFixture, seconds: Int) async throws {
        for _ in 0..<seconds {
            try await poller.pollLive()
            try await poller.settle()
            try await fixture.store.pruneSeen(source: poller.sourceConfig.name)
            fixture.clock.advance(by: .seconds(1))
        }
    }

    @Test(arguments: [100.0, 1_000.0])
    func aSteadyStreamIsReadAboutTwiceWhateverTheLookback(_ perSecond: Double) async throws {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = nil
        try await withIngest(settings: settings) { fixture in
            fixture.api.log.startLiveTraffic(perSecond: perSecond)
            let poller = fixture.poller(
                fixture.source(startFrom: .now, lookback: .seconds(60), rateLimit: RateLimit(perSecond: 10_000, burst: 10_000)),
                [Self.all])
            // Past the first lookback, so that the settle edge is at work, then measure three minutes.
            try await poll(poller, fixture, seconds: 120)
            let before = (fixture.api.counts, fixture.api.log.count)
            try await poll(poller, fixture, seconds: 180)
            let requests = fixture.api.counts.requests - before.0.requests
            let served = fixture.api.counts.eventsServed - before.0.eventsServed
            let events = fixture.api.log.count - before.1
            let perThousand = Double(requests) * 1000 / Double(events)
            #expect(perThousand <= (perSecond == 100 ? 30 : 23), "\(requests) requests for \(events) events")
            #expect(Double(served) / Double(events) < 2.2, "\(served) events read for \(events)")
            let queued = try await fixture.store.queuedEventIDs(subscription: "all")
            #expect(queued.count == Set(queued).count)
        }
    }

    @Test(arguments: [1, 30, 59])
    func eventsVisibleLateAnywhereWithinTheLookbackAreQueuedOnce(_ delaySeconds: Int) async throws {
        try await withIngest { fixture in
            let late = EventLog.LateVisibility(fraction: 0.2, delay: .seconds(Int64(delaySeconds)))
            fixture.api.log.startLiveTraffic(perSecond: 50, late: late)
            let poller = fixture.poller(fixture.source(startFrom: .now, lookback: .seconds(60)), [Self.all])
            try await poll(poller, fixture, seconds: 120)
            fixture.api.log.stopLiveTraffic()
            // The last events ripen: lookback plus a settle step.
            try await poll(poller, fixture, seconds: 100)
            let events = fixture.api.log.allEvents
            #expect(events.filter { $0.visibleAt > $0.timestamp }.count > 1_000)
            let queued = try await fixture.store.queuedEventIDs(subscription: "all")
            #expect(queued.count == events.count)
            #expect(Set(queued) == Set(events.map(\.eventID)))
            #expect(poller.health.snapshot.newEvents == events.count)
        }
    }

    @Test func anEventStampedInTheFutureIsQueuedOnceAndSkipsNothing() async throws {
        try await withIngest { fixture in
            fixture.api.log.startLiveTraffic(perSecond: 20)
            let oneDay: Int64 = 86_400_000
            let future = fixture.api.log.add(at: fixture.now.millisecondsSinceEpoch + oneDay, actionIndex: 0, visibleAt: 0)
            let poller = fixture.poller(fixture.source(startFrom: .now, lookback: .seconds(60)), [Self.all])
            try await poll(poller, fixture, seconds: 90)
            let cursor = try #require(try await fixture.store.cursor(of: "acme"))
            #expect(cursor <= fixture.now.advanced(by: .zero - Poller<TestClock>.liveMargin))
            #expect(cursor >= fixture.now.advanced(by: .seconds(-2)))
            try await poll(poller, fixture, seconds: 30)
            let queued = try await fixture.store.queuedEventIDs(subscription: "all")
            #expect(queued.filter { $0 == future.eventID }.count == 1)
            let stamped = fixture.api.log.allEvents.filter { $0.timestamp < fixture.now.millisecondsSinceEpoch - 1_000 }
            #expect(Set(stamped.map(\.eventID)).isSubset(of: Set(queued)))
            #expect(queued.count == Set(queued).count)
        }
    }

    @Test func aRelayClockAheadOfTheAPIsNeverCarriesTheCursorPastTheAPIsNow() async throws {
        // The relay's clock is 30 s ahead; with no settle edge, anything the cursor jumped over would be lost.
        try await withIngest(apiClockOffset: -30_000) { fixture in
            fixture.api.log.startLiveTraffic(perSecond: 20)
            let poller = fixture.poller(fixture.source(startFrom: .time(fixture.now.advanced(by: .seconds(-30))), lookback: .zero), [Self.all])
            try await poll(poller, fixture, seconds: 60)
            let apiNow = fixture.now.advanced(by: .seconds(-30))
            let cursor = try #require(try await fixture.store.cursor(of: "acme"))
            #expect(cursor <= apiNow.advanced(by: .zero - Poller<TestClock>.liveMargin))
            fixture.api.log.stopLiveTraffic()
            try await poll(poller, fixture, seconds: 2)
            let queued = try await fixture.store.queuedEventIDs(subscription: "all")
            #expect(queued == fixture.expectedIDs)
        }
    }

    /// Where the live cursor may go after a page: when the request was sent, checked against the `Date`'s second.
    @Test(arguments: [
        // (sent, received, Date's second as ms into the minute, expected) in ms into 12:00
        (10_100, 10_400, 10_000, 10_100),  // a slow answer within one second: when it was sent, not when it came
        (9_950, 10_300, 10_000, 9_950),  // sent before the `Date`'s second, answered in it: when it was sent
        (12_500, 12_600, 10_000, 10_000),  // the relay's clock two seconds ahead: the `Date`
        (7_000, 7_100, 10_000, 10_000),  // the relay's clock three seconds behind: the `Date`
    ] as [(Int64, Int64, Int64, Int64)])
    func theAPIsNowIsWhenThePageWasAskedForCheckedByTheDate(_ times: (Int64, Int64, Int64, Int64)) {
        let noon: Int64 = 1_714_564_800_000  // 2024-05-01T12:00:00Z
        let date = "Wed, 01 May 2024 12:00:\(times.2 / 1000 < 10 ? "0" : "")\(times.2 / 1000) GMT"
        let at = { (ms: Int64) in Timestamp(millisecondsSinceEpoch: noon + ms) }
        let apiNow = EventsAPIClient<TestClock>.apiNow(date: date, sentAt: at(times.0), receivedAt: at(times.1))
        #expect(apiNow == at(times.3), "\(date)")
        #expect(EventsAPIClient<TestClock>.apiNow(date: nil, sentAt: at(times.0), receivedAt: at(times.1)) == at(times.0))
    }

    @Test func anIdleOrFilteredSourceShowsTheLagOfOnePoll() async throws {
        try await withIngest { fixture in
            // One click a day ago; since then only other actions, which `include=email_click` filters out.
            fixture.api.log.add(at: fixture.now.millisecondsSinceEpoch - 86_400_000, actionIndex: 2)
            fixture.api.log.add(at: fixture.now.millisecondsSinceEpoch - 60_000, actionIndex: 0)
            let clicks = IngestFixture.subscription("clicks", include: ["email_click"])
            let poller = fixture.poller(fixture.source(startFrom: .time(fixture.now.advanced(by: .seconds(-90_000)))), [clicks])
            try await poll(poller, fixture, seconds: 5)
            let cursor = try #require(try await fixture.store.cursor(of: "acme"))
            let lag = cursor.duration(to: fixture.now)
            #expect(lag <= .seconds(2) && lag >= Poller<TestClock>.liveMargin)
            #expect(try await fixture.store.queuedEventIDs(subscription: "clicks").count == 1)
        }
    }

    @Test func timesTheRelayCannotPlaceAreSkippedAndCounted() async throws {
        try await withIngest { fixture in
            let base = fixture.now.millisecondsSinceEpoch - 10_000
            let absurd = ["1e19", "-1e19", "1e400", #""0000-00-00""#, #""10000-01-01T00:00:00Z""#, #""NaN""#, "-1",
                          "253402300800000", #""-0001-01-01""#, "true", "null", "[]", #""""#]
            for (index, json) in absurd.enumerated() {
                fixture.api.log.add(at: base + Int64(index) * 100, actionIndex: 0, timestampJSON: json)
                fixture.api.log.add(at: base + Int64(index) * 100 + 1, actionIndex: 1)
            }
            let poller = fixture.poller(fixture.source(startFrom: .time(Timestamp(millisecondsSinceEpoch: base - 1))), [Self.all])
            try await poll(poller, fixture, seconds: 3)
            let readable = fixture.api.log.allEvents.filter { $0.timestampJSON == nil }.map(\.eventID)
            #expect(try await fixture.store.queuedEventIDs(subscription: "all") == readable)
            let skipped = poller.health.snapshot.skipped
            #expect(skipped[.timeOutOfRange] == 5)
            #expect(skipped[.unreadableTime] == 7)
            #expect(skipped[.missingTime] == 1)
            let stored = try await fixture.store.skippedCounts(source: "acme")
            #expect(stored == ["time_out_of_range": 5, "unreadable_time": 7, "missing_time": 1])
        }
    }

    @Test func raisingAndLoweringTheLookbackReQueuesNothing() async throws {
        try await withIngest { fixture in
            fixture.api.log.startLiveTraffic(perSecond: 20)
            let start = StartPosition.time(fixture.now)
            let first = fixture.poller(fixture.source(startFrom: start, lookback: .seconds(60)), [Self.all])
            try await poll(first, fixture, seconds: 150)
            // A restart with the lookback raised to an hour, then one with it off: each reads only what it must.
            let raised = fixture.poller(fixture.source(startFrom: start, lookback: .seconds(3_600)), [Self.all])
            try await poll(raised, fixture, seconds: 120)
            let off = fixture.poller(fixture.source(startFrom: start, lookback: .zero), [Self.all])
            try await poll(off, fixture, seconds: 60)
            let back = fixture.poller(fixture.source(startFrom: start, lookback: .seconds(60)), [Self.all])
            try await poll(back, fixture, seconds: 120)
            let newEvents = [first, raised, off, back].map { $0.health.snapshot.newEvents }.reduce(0, +)
            let queued = try await fixture.store.queuedEventIDs(subscription: "all")
            #expect(newEvents == queued.count)
            #expect(Set(queued).count == queued.count)
            let stamped = fixture.api.log.allEvents.filter { $0.timestamp < fixture.now.millisecondsSinceEpoch - 1_000 }
            #expect(Set(stamped.map(\.eventID)).isSubset(of: Set(queued)))
            let marks = try #require(try await fixture.store.marks(of: "acme"))
            #expect(marks.seenHorizon <= marks.settled && marks.settled <= marks.live)
        }
    }

    @Test func aBacklogIsReadOnceNotOncePerEdge() async throws {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = nil
        try await withIngest(settings: settings) { fixture in
            fixture.api.log.addBacklog(count: 20_000, from: fixture.now.millisecondsSinceEpoch - 3_600_000, to: fixture.now.millisecondsSinceEpoch)
            let poller = fixture.poller(fixture.source(startFrom: .earliest, lookback: .seconds(60)), [Self.all])
            try await poll(poller, fixture, seconds: 120)
            #expect(try await fixture.store.queuedEventIDs(subscription: "all").count == 20_000)
            #expect(fixture.api.counts.eventsServed < 20_000 + 2_000, "\(fixture.api.counts.eventsServed) served")
        }
    }
}
