import IntilerySimulator
import RelayCore
import Testing

/// Each subscription keeps its own place (docs/architecture.md, "Subscription cursors"): a new one backfills from `startFrom`
/// and joins the shared poll; a full queue falls behind and catches up once drained. Every event reaches each
/// subscription once, with live and late events arriving throughout. On the test clock against the fake API.
@Suite struct SubscriptionCursorTests {
    /// What receivers got, in order: rows are taken out of the outbox as delivered, so an event queued twice shows
    /// up twice.
    final class Deliveries: @unchecked Sendable {
        var ids: [String: [String]] = [:]

        func take(_ subscription: String, from store: StateStore, at now: Timestamp) async throws {
            let rows = try await store.deliveries(subscription: subscription, due: .init(millisecondsSinceEpoch: .max), limit: 1_000_000, strict: false, excluding: [])
            try await store.record(rows.map { DeliveryOutcome(deliveries: [$0], decision: .delivered, attemptedAt: now) })
            ids[subscription, default: []] += rows.map(\.eventID)
        }
    }

    /// All three edges once a second, as `run()` does, taking out what `draining` have queued after each pass.
    func poll(_ poller: Poller<TestClock>, _ fixture: IngestFixture, seconds: Int, draining: [String], into deliveries: Deliveries)
        async throws
    {
        for _ in 0..<seconds {
            try await poller.pollLive()
            try await poller.settle()
            try await poller.catchUp()
            try await fixture.store.pruneSeen(source: poller.sourceConfig.name)
            for name in draining { try await deliveries.take(name, from: fixture.store, at: fixture.now) }
            fixture.clock.advance(by: .seconds(1))
        }
    }

    static func subscription(_ name: String, startFrom: StartPosition = .now, maxQueued: Int = 1_000_000) -> SubscriptionConfig {
        var subscription = IngestFixture.subscription(name)
        subscription.startFrom = startFrom
        subscription.webhook.maxQueued = maxQueued
        return subscription
    }

    static func expectEachOnce(_ delivered: [String], _ expected: [String], _ name: String, sourceLocation: SourceLocation = #_sourceLocation) {
        var counts: [String: Int] = [:]
        for id in delivered { counts[id, default: 0] += 1 }
        let repeated = counts.filter { $0.value > 1 }
        #expect(repeated.count == 0, "\(name): \(repeated.count) events twice, e.g. \(repeated.prefix(3))", sourceLocation: sourceLocation)
        let missing = Set(expected).subtracting(counts.keys)
        #expect(missing.count == 0, "\(name): \(missing.count) of \(expected.count) events missing, e.g. \(missing.prefix(3))", sourceLocation: sourceLocation)
        let extra = Set(counts.keys).subtracting(expected)
        #expect(extra.count == 0, "\(name): \(extra.count) events it should not have, e.g. \(extra.prefix(3))", sourceLocation: sourceLocation)
    }

    /// With a lookback of 0 there is no settle edge, and the marks move with every live poll: it must still join.
    @Test(arguments: [60, 0])
    func aNewSubscriptionBackfillsFromStartFromThenJoinsTheSharedPollGettingEachEventOnce(lookbackSeconds: Int) async throws {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = nil
        try await withIngest(settings: settings) { fixture in
            let start = fixture.now.millisecondsSinceEpoch
            fixture.api.log.addBacklog(count: 3_000, from: start - 7_200_000, to: start)
            let late = lookbackSeconds > 0 ? EventLog.LateVisibility(fraction: 0.2, delay: .seconds(20)) : nil
            fixture.api.log.startLiveTraffic(perSecond: 40, late: late)
            let source = fixture.source(startFrom: .now, lookback: .seconds(Int64(lookbackSeconds)))
            let existing = Self.subscription("existing")
            _ = try await fixture.store.registerSubscriptions([existing], now: fixture.now)
            let deliveries = Deliveries()
            try await poll(fixture.poller(source, [existing]), fixture, seconds: 90, draining: ["existing"], into: deliveries)
            let requestsBefore = fixture.api.counts.requests

            // Added with startFrom an hour back, as a reload would: registered first, then a poller for both.
            let since = Timestamp(millisecondsSinceEpoch: fixture.now.millisecondsSinceEpoch - 3_600_000)
            let added = Self.subscription("added", startFrom: .time(since))
            let behind = try await fixture.store.registerSubscriptions([existing, added], now: fixture.now)
            #expect(behind.map(\.subscription) == ["added"])
            let poller = fixture.poller(source, [existing, added])
            try await poll(poller, fixture, seconds: 120, draining: ["existing", "added"], into: deliveries)
            #expect(try await fixture.store.subscriptionCursor("added")?.state == .current)
            fixture.api.log.stopLiveTraffic()
            try await poll(poller, fixture, seconds: 100, draining: ["existing", "added"], into: deliveries)

            let events = fixture.api.log.allEvents
            Self.expectEachOnce(deliveries.ids["added"] ?? [], events.filter { $0.timestamp >= since.millisecondsSinceEpoch }.map(\.eventID), "added")
            // The existing one started at "now": the backlog before it is not its business.
            Self.expectEachOnce(deliveries.ids["existing"] ?? [], events.filter { $0.timestamp >= start }.map(\.eventID), "existing")
            // The backfill read an hour once, in pages: not a second shared poll.
            let requests = fixture.api.counts.requests - requestsBefore
            #expect(requests < 220 * 3, "\(requests) requests")
        }
    }

    @Test func aFullQueueFallsBehindKeepsItsPlaceAndCatchesUpOnceDrainedLosingNothing() async throws {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = nil
        try await withIngest(settings: settings) { fixture in
            fixture.api.log.startLiveTraffic(perSecond: 30, late: EventLog.LateVisibility(fraction: 0.1, delay: .seconds(10)))
            let source = fixture.source(startFrom: .now, lookback: .seconds(30))
            let healthy = Self.subscription("healthy")
            let slow = Self.subscription("slow", maxQueued: 200)
            _ = try await fixture.store.registerSubscriptions([healthy, slow], now: fixture.now)
            let poller = fixture.poller(source, [healthy, slow])
            let deliveries = Deliveries()

            // "slow" receives nothing for two minutes: its queue fills, and it falls behind.
            var deepest = 0
            for _ in 0..<12 {
                try await poll(poller, fixture, seconds: 10, draining: ["healthy"], into: deliveries)
                deepest = max(deepest, try await fixture.store.queueDepth("slow"))
            }
            let cursor = try #require(try await fixture.store.subscriptionCursor("slow"))
            #expect(cursor.state == .behind && cursor.reason == .queueFull)
            // Late events before its place still reach it, a few over the bound.
            #expect(deepest >= 200 && deepest < 230, "\(deepest)")

            // Its receiver comes back: it drains, catches up from the API and joins the shared poll.
            try await poll(poller, fixture, seconds: 120, draining: ["healthy", "slow"], into: deliveries)
            #expect(try await fixture.store.subscriptionCursor("slow")?.state == .current)
            fixture.api.log.stopLiveTraffic()
            try await poll(poller, fixture, seconds: 80, draining: ["healthy", "slow"], into: deliveries)

            let ids = fixture.api.log.allEvents.map(\.eventID)
            Self.expectEachOnce(deliveries.ids["healthy"] ?? [], ids, "healthy")
            Self.expectEachOnce(deliveries.ids["slow"] ?? [], ids, "slow")
        }
    }
}
