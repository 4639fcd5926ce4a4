import CurlHTTP
import Foundation
import IntilerySimulator
import Logging
import RelayCore
import Testing

/// A webhook down for three simulated days: the whole pipeline (pollers, dispatchers, outcome writer) on one test
/// clock with the fake API and the receiver, so that days pass in seconds. The dead webhook's queue stays at
/// `maxQueued`; the healthy one and polling never stop; once it returns, every event is delivered or dead-lettered
/// by the rules (`maxAge` from when it was queued), none lost. And one dispatcher alone through a three-day outage
/// with default settings.
// The limit guards against a hang: alone it takes under a minute, beside the PostgreSQL suites on two cores up to
// four times that.
@Suite(.timeLimit(.minutes(5))) struct LongOutageTests {
    @Test func threeDaysDownAtABoundedQueueEndsWithEveryEventDeliveredOrDeadLettered() async throws {
        let clock = TestClock(autoAdvance: false)
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = nil
        let api = try await FakeEventsAPI.start(settings: settings, time: .derived { clock.wallMilliseconds })
        let receiver = try await WebhookReceiver.start(time: .derived { clock.wallMilliseconds })
        receiver.keep(bodies: true)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("relay-outage-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let http = CurlHTTPClient()

        let start = clock.wallMilliseconds
        let days: Int64 = 3
        let outageEnd = start + days * 86_400_000
        receiver.outage("/down", until: outageEnd, reply: .status(503))
        var source = SourceConfig(
            name: "acme", clientId: api.account.clientId, accountId: api.account.accountId, brandId: api.account.brandId,
            authToken: Secret(api.account.authToken, origin: .literal))
        source.baseURL = api.baseURL
        source.startFrom = .time(clock.wallTime)
        source.pollInterval = .seconds(60)
        source.lookback = .seconds(120)
        var config = RelayConfig()
        config.sources = [source]
        var down = WebhookConfig(url: receiver.url("/down"))
        down.maxQueued = 500
        config.subscriptions = [
            SubscriptionConfig(name: "healthy", source: "acme", webhook: WebhookConfig(url: receiver.url("/healthy"))),
            SubscriptionConfig(name: "down", source: "acme", webhook: down),
        ]
        _ = try await store.registerSubscriptions(config.subscriptions, now: clock.wallTime)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let pipeline = Pipeline(
            config: config, store: store, http: http, limiters: APIRateLimiters(clock: clock), time: clock.relayTime, logger: logger)

        // One event every 20 s of simulated time: 12,960 over the three days, 26 times the dead one's bound.
        api.log.startLiveTraffic(perSecond: 0.05)
        var deepest = 0
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pipeline.run() }
            // Time moves a minute at a time, each step given a moment of real time to run what it woke: a clock
            // that jumped to each sleeper's deadline would let one long sleep age everybody's queue at once.
            func step() async throws {
                clock.advance(by: .seconds(60))
                try await Task.sleep(for: .milliseconds(4))
            }
            while clock.wallMilliseconds < outageEnd {
                try await step()
                deepest = max(deepest, try await store.queueDepth("down"))
            }
            api.log.stopLiveTraffic()
            let total = api.log.count
            // Back: everything ends delivered or dead-lettered. Simulated time is cheap; the bound is real time, as
            // a loaded machine does less work in each simulated minute.
            let deadline = ContinuousClock.now + .seconds(150)
            while ContinuousClock.now < deadline {
                let delivered = receiver.record.successesByPath["/down", default: 0]
                let dead = try await store.deadLetters(subscription: "down").count
                let healthy = receiver.record.successesByPath["/healthy", default: 0]
                if delivered + dead >= total, healthy >= total, try await store.queueDepth("down") == 0 { break }
                try await step()
            }
            pipeline.stop()
            try await group.waitForAll()
        }
        let events = Set(api.log.allEvents.map(\.eventID))
        let healthy = receiver.record.requests(to: "/healthy").compactMap(Self.eventID)
        let delivered = receiver.record.requests(to: "/down").filter { $0.answeredStatus == 200 }.compactMap(Self.eventID)
        let dead = try await store.deadLetters(subscription: "down")
        print("three days down: \(events.count) events, deepest queue \(deepest), \(delivered.count) delivered, \(dead.count) dead-lettered")
        #expect(events.count > 12_000)
        #expect(healthy.count == events.count, "\(healthy.count) deliveries to the healthy one, \(Set(healthy).count) distinct")
        #expect(Set(healthy) == events)
        // maxQueued, and a join's tail (the events of about a lookback and a poll, 9 at this rate) on top.
        #expect(deepest <= 500 + 9, "\(deepest) queued")
        // None lost, none twice: each event either delivered once or a dead letter.
        #expect(delivered.count == Set(delivered).count)
        #expect(Set(delivered).isDisjoint(with: dead.map(\.eventID)))
        #expect(Set(delivered).union(dead.map(\.eventID)) == events)
        // Dead letters only by maxAge, counted from when each was queued.
        #expect(dead.allSatisfy { $0.reason.hasPrefix("max_age") })
        await http.shutdown()
        try await api.shutdown()
        try await receiver.shutdown()
    }

    /// One dispatcher on an auto-advancing clock: about 850 breaker probes over the 71 hours, each a real request,
    /// which takes a second alone and, in the full suite on a slow machine, passed the 2 minutes of DispatcherTests.
    @Test func threeDayOutageWithDefaultSettingsDeliversEverythingAndDeadLettersNothing() async throws {
        try await withDelivery { fixture in
            let subscription = fixture.subscription("outage")
            #expect(subscription.webhook.retry == RetryPolicy())
            // Back an hour before maxAge (72 h): the auto-advancing clock may run ahead while a real request is out,
            // and on a loaded machine a minute's margin was not enough (events expired in the fresh-clone CI).
            let outageEnd = fixture.now.advanced(by: .seconds(71 * 3600)).millisecondsSinceEpoch
            fixture.receiver.outage("/hooks/outage", until: outageEnd, reply: .status(503))
            try await fixture.enqueue(20, for: ["outage"])
            try await fixture.deliver([fixture.dispatcher(subscription)], until: DispatcherTests.outboxEmpty("outage"))
            #expect(try await fixture.store.deadLetters().isEmpty)
            let record = fixture.receiver.record
            #expect(record.successesByPath["/hooks/outage"] == 20)
            let successes = record.requests(to: "/hooks/outage").filter { $0.answeredStatus == 200 }
            #expect(successes.allSatisfy { $0.receivedAt >= outageEnd })
            // The circuit breaker kept the outage cheap: about one probe per 5-minute interval once open, rather
            // than 20 events × ~82 attempts each.
            #expect(record.countsByPath["/hooks/outage"]! < 72 * 3600 / 300 + 40)
        }
    }

    static func eventID(_ request: ReceivedWebhook) -> String? {
        guard let body = try? JSONSerialization.jsonObject(with: Data(request.body)) as? [String: Any] else { return nil }
        return body["eventID"] as? String
    }
}
