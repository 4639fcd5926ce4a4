import CurlHTTP
import Foundation
import IntilerySimulator
import RelayCore
import Testing

@Suite struct PollerTests {
    static let all = IngestFixture.subscription("all")

    @Test func backlogWithSameMillisecondBurstsAcrossPageAndWindowBoundariesIsQueuedOnceInOrder() async throws {
        try await withIngest { fixture in
            let start = ingestEpoch - 3_600_000
            // 24,100 events one every ~149 ms, then bursts of 300 at times that land across the page boundary near
            // index 5,000 and the result-window boundaries near 10,000 and 20,000.
            let span: Int64 = 3_600_000
            fixture.api.log.addBacklog(count: 24_100, from: start, to: start + span)
            for index in [4_950, 9_900, 19_960] {
                fixture.api.log.addBurst(count: 300, at: start + Int64(index) * span / 24_100 + 1)
            }
            let poller = fixture.poller(fixture.source(), [Self.all])
            let cursor = try await poller.pollLive()

            let queued = try await fixture.store.queuedEventIDs(subscription: "all")
            #expect(queued.count == 25_000)
            #expect(Set(queued).count == 25_000)
            #expect(queued == fixture.expectedIDs)
            // Caught up: the cursor stands at the API's now less the margin, past the last event.
            #expect(cursor == fixture.now.advanced(by: .zero - Poller<TestClock>.liveMargin))
            #expect(cursor > Timestamp(millisecondsSinceEpoch: fixture.api.log.allEvents.last!.timestamp))
            #expect(poller.health.snapshot.windowRestarts >= 2)
            #expect(fixture.api.counts.rateLimited == 0)

            // A second poll re-reads the cursor's millisecond and queues nothing new.
            try await poller.pollLive()
            #expect(try await fixture.store.queuedEventIDs(subscription: "all").count == 25_000)
        }
    }

    @Test func rateLimitSharedByTheTokenIsNeverExceeded() async throws {
        try await withIngest { fixture in
            fixture.api.log.addBacklog(count: 60_000, from: ingestEpoch - 3_600_000, to: ingestEpoch)
            let poller = fixture.poller(fixture.source(), [Self.all])
            try await poller.pollLive()
            #expect(fixture.api.counts.rateLimited == 0)
            #expect(fixture.api.counts.pages > 600)
            #expect(try await fixture.store.queuedEventIDs(subscription: "all").count == 60_000)
        }
    }

    @Test(arguments: [1, nil] as [Int?])
    func storms429And5xxMalformedAndTruncatedBodiesLoseNothingAndDuplicateNothing(_ retryAfter: Int?) async throws {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = (2, 5)
        settings.retryAfterSeconds = retryAfter
        settings.faults = try SimulatorFaults(parsing: "error=0.1,unavailable=0.1,malformed=0.1,truncated=0.1")
        try await withIngest(settings: settings) { fixture in
            fixture.api.log.addBacklog(count: 3_000, from: ingestEpoch - 600_000, to: ingestEpoch)
            fixture.api.log.addBurst(count: 250, at: ingestEpoch - 300_000)
            let poller = fixture.poller(fixture.source(rateLimit: RateLimit(perSecond: 1000, burst: 1000)), [Self.all])
            try await poller.pollLive()
            let counts = fixture.api.counts
            #expect(counts.rateLimited > 0)
            #expect((counts.byStatus[500] ?? 0) > 0 && (counts.byStatus[503] ?? 0) > 0)
            let queued = try await fixture.store.queuedEventIDs(subscription: "all")
            #expect(queued == fixture.expectedIDs)
            // Retry-After was honoured to the second; without it, the backoff waited at least its floor. A page asked
            // for ahead and then not used (its walk had failed or ended first) had no answer to wait out.
            let sleeps = fixture.clock.sleeps
            #expect(sleeps.allSatisfy { $0 >= .seconds(1) })
            let unused = poller.health.snapshot.pagesAskedAheadUnused
            #expect(sleeps.filter { $0 == .seconds(1) }.count >= (retryAfter == nil ? 0 : counts.rateLimited - unused))
        }
    }

    @Test func lateVisibleEventsWithinTheLookbackAreCaught() async throws {
        try await withIngest { fixture in
            fixture.api.log.startLiveTraffic(perSecond: 20, late: EventLog.LateVisibility(fraction: 0.25, delay: .seconds(20)))
            let poller = fixture.poller(fixture.source(startFrom: .now, lookback: .seconds(60)), [Self.all])
            // Two minutes of polling once a second, then past the lookback so the settle edge reads the last range.
            for _ in 0..<120 {
                try await poller.pollLive()
                try await poller.settle()
                fixture.clock.advance(by: .seconds(1))
            }
            fixture.api.log.stopLiveTraffic()
            for _ in 0..<90 {
                try await poller.pollLive()
                try await poller.settle()
                fixture.clock.advance(by: .seconds(1))
            }
            let expected = fixture.expectedIDs
            #expect(expected.count >= 2_300)
            #expect(fixture.api.log.allEvents.filter { $0.visibleAt > $0.timestamp }.count > 400)
            let queued = try await fixture.store.queuedEventIDs(subscription: "all")
            #expect(Set(queued) == Set(expected))
            #expect(queued.count == expected.count)
        }
    }

    @Test(arguments: ResponseShape.allCases.filter { $0 != .custom }, FieldNaming.allCases)
    func everyShapeAndNamingIsDecoded(_ shape: ResponseShape, _ naming: FieldNaming) async throws {
        var settings = FakeEventsAPI.Settings()
        settings.shape = shape
        settings.naming = naming
        try await withIngest(settings: settings) { fixture in
            fixture.api.log.addBacklog(count: 450, from: ingestEpoch - 60_000, to: ingestEpoch)
            let poller = fixture.poller(fixture.source(), [Self.all])
            try await poller.pollLive()
            #expect(try await fixture.store.queuedEventIDs(subscription: "all") == fixture.expectedIDs)
        }
    }

    @Test func responseOverridesReadACustomShape() async throws {
        var settings = FakeEventsAPI.Settings()
        settings.shape = .custom
        try await withIngest(settings: settings) { fixture in
            fixture.api.log.addBacklog(count: 250, from: ingestEpoch - 60_000, to: ingestEpoch)
            let overrides = ResponseShapeOverrides(
                eventsPath: "/payload/list", idField: "meta.ref", timestampField: "occurred", actionField: "kind")
            let clicks = IngestFixture.subscription("clicks", include: ["email_click"])
            let poller = fixture.poller(fixture.source(response: overrides), [Self.all, clicks])
            try await poller.pollLive()
            #expect(try await fixture.store.queuedEventIDs(subscription: "all") == fixture.expectedIDs)
            let expectedClicks = fixture.api.log.allEvents.filter { $0.action == "email_click" }.map(\.eventID)
            #expect(try await fixture.store.queuedEventIDs(subscription: "clicks") == expectedClicks)
            // Without the overrides the same body is unreadable, and nothing moves.
            let blind = fixture.poller(fixture.source(name: "blind"), [Self.all])
            let task = Task { try await blind.pollLive() }
            while blind.health.snapshot.consecutiveFailures < 3 { await Task.yield() }
            task.cancel()
            _ = try? await task.value
            #expect(blind.health.snapshot.problem?.hasPrefix("malformed") == true)
            #expect(try await fixture.store.cursor(of: "blind") == Timestamp(millisecondsSinceEpoch: 0))
        }
    }

    @Test func fiveSubscriptionsCostAsManyRequestsAsOne() async throws {
        func requests(_ subscriptions: [SubscriptionConfig]) async throws -> (Int, [String: Int]) {
            try await withIngest { fixture in
                fixture.api.log.addBacklog(count: 5_000, from: ingestEpoch - 600_000, to: ingestEpoch)
                let poller = fixture.poller(fixture.source(), subscriptions)
                try await poller.pollLive()
                var queued: [String: Int] = [:]
                for subscription in subscriptions {
                    queued[subscription.name] = try await fixture.store.queuedEventIDs(subscription: subscription.name).count
                }
                return (fixture.api.counts.requests, queued)
            }
        }
        let (one, _) = try await requests([Self.all])
        let five = [
            Self.all,
            IngestFixture.subscription("clicks", include: ["email_click"]),
            IngestFixture.subscription("no-pages", exclude: ["page"]),
            IngestFixture.subscription("spring", filter: .condition(FieldPath("properties.campaign")!, .eq, .string("spring"))),
            IngestFixture.subscription("vip", filter: .condition(FieldPath("properties.vip")!, .eq, .bool(true))),
        ]
        let (fiveRequests, queued) = try await requests(five)
        #expect(fiveRequests == one)
        #expect(one <= 52)
        #expect(queued["all"] == 5_000)
        #expect(queued["clicks"]! > 0 && queued["clicks"]! < 5_000)
        #expect(queued["spring"] == 1_250)
        #expect(queued["vip"]! > 0 && queued["vip"]! < 1_000)
    }

    @Test func includeIsSentWhenEverySubscriptionWantsOneAction() async throws {
        try await withIngest { fixture in
            fixture.api.log.addBacklog(count: 600, from: ingestEpoch - 60_000, to: ingestEpoch)
            fixture.api.recordQueries(true)
            let clicks = IngestFixture.subscription("clicks", include: ["email_click"])
            let alsoClicks = IngestFixture.subscription("also", include: ["email_click"], filter: .condition(FieldPath("properties.vip")!, .eq, .bool(false)))
            let poller = fixture.poller(fixture.source(), [clicks, alsoClicks])
            try await poller.pollLive()
            #expect(fixture.api.queries.allSatisfy { $0.contains("include=email_click") && $0.contains("sort=asc") })
            let expected = fixture.api.log.allEvents.filter { $0.action == "email_click" }.map(\.eventID)
            #expect(try await fixture.store.queuedEventIDs(subscription: "clicks") == expected)
            #expect(fixture.api.counts.eventsServed == expected.count)
        }
    }

    @Test func startFromAppliesOnlyWithoutAStoredCursor() async throws {
        try await withIngest { fixture in
            fixture.api.log.addBacklog(count: 100, from: ingestEpoch - 100_000, to: ingestEpoch)
            let fromNow = fixture.poller(fixture.source(name: "fromnow", startFrom: .now), [Self.all])
            #expect(try await fromNow.startingCursor() == fixture.now)
            let fixed = Timestamp(iso8601: "2024-04-30T23:59:10Z")!
            let fromTime = fixture.poller(fixture.source(name: "fromtime", startFrom: .time(fixed)), [Self.all])
            #expect(try await fromTime.startingCursor() == fixed)
            // Changing startFrom later does nothing: the stored cursor wins.
            let changed = fixture.poller(fixture.source(name: "fromtime", startFrom: .earliest), [Self.all])
            #expect(try await changed.startingCursor() == fixed)
            // startFrom now with lookback 0 sees nothing of the backlog.
            let nowPoller = fixture.poller(fixture.source(name: "fromnow", startFrom: .now, lookback: .zero), [IngestFixture.subscription("fresh")])
            try await nowPoller.pollLive()
            #expect(try await fixture.store.queuedEventIDs(subscription: "fresh").isEmpty)
        }
    }

    @Test func wrongTokenMarksTheSourceUnhealthyAndKeepsRetryingSlowly() async throws {
        try await withIngest { fixture in
            fixture.api.log.addBacklog(count: 10, from: ingestEpoch - 10_000, to: ingestEpoch)
            let poller = fixture.poller(fixture.source(token: "wrong-token"), [Self.all])
            let task = Task { try await poller.pollLive() }
            while poller.health.snapshot.consecutiveFailures < 4 { await Task.yield() }
            task.cancel()
            _ = try? await task.value
            #expect(poller.health.snapshot.problem?.hasPrefix("unauthorized") == true)
            #expect(fixture.clock.sleeps.prefix(3).allSatisfy { $0 >= .seconds(30) })
            #expect(fixture.api.counts.byStatus[401] ?? 0 >= 4)
            #expect(poller.health.snapshot.problem?.contains("wrong-token") == false)
        }
    }
}
