import CurlHTTP
import Foundation
import IntilerySimulator
import Logging
import PostgresNIO
import RelayCore
import RelayJSON
import RelayPostgres
import Testing

/// Several instances' dispatchers on one PostgreSQL queue, sending to a real receiver over loopback.
@Suite(.enabled(if: TestDatabase.available, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
struct ClaimDispatcherTests {
    /// A receiver, an HTTP client and a migrated schema, each test's own.
    struct Fixture {
        let receiver: WebhookReceiver
        let http: CurlHTTPClient
        let database: RelayDatabase
        let client: PostgresClient
        var deliveries: PostgresDeliveries { PostgresDeliveries(database) }

        func subscription(_ name: String, _ configure: (inout WebhookConfig) -> Void = { _ in }) -> SubscriptionConfig {
            var webhook = WebhookConfig(url: receiver.url("/hooks/\(name)"))
            webhook.timeout = .seconds(5)
            webhook.retry.initialBackoff = .milliseconds(10)
            webhook.retry.maxBackoff = .milliseconds(20)
            configure(&webhook)
            return SubscriptionConfig(name: name, source: "acme", webhook: webhook)
        }

        func dispatcher(_ subscription: SubscriptionConfig, instance: String, visibility: Duration? = nil) -> ClaimDispatcher<ContinuousClock> {
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            return ClaimDispatcher(
                subscription: subscription, queue: deliveries, guards: PostgresWebhookGuards(database), pauses: PostgresPauses(database),
                http: http, instance: instance,
                time: .system, logger: logger, visibility: visibility, idleCheck: .milliseconds(20))
        }

        /// Queues `count` events for `subscriptions`; their ids.
        @discardableResult
        func queue(_ count: Int, for subscriptions: [String]) async throws -> [String] {
            let events = PostgresDeliveriesTests.events(count)
            // Queued now, by the wall clock the dispatchers read: `maxAge` counts from here.
            _ = try await deliveries.queue(events, source: "acme", for: subscriptions, now: RelayTime.system.now())
            return events.map(\.id)
        }

        func eventIDs(sentTo name: String) -> [String] {
            receiver.record.requests(to: "/hooks/\(name)").flatMap { request -> [String] in
                guard let body = try? JSONParser.parse(request.body) else { return [] }
                if let id = body.objectValue?["eventID"]?.stringValue { return [id] }
                return body.arrayValue?.compactMap { $0.objectValue?["eventID"]?.stringValue } ?? []
            }
        }

        func depth(_ subscription: String) async throws -> Int {
            try await PostgresStatus(database).queueDepths()[subscription] ?? 0
        }

        /// Runs `dispatchers` until `subscription`'s queue is empty (or three minutes pass: a ceiling for a loaded machine,
        /// where alone it takes seconds), then stops them.
        func drain(_ subscription: String, with dispatchers: [ClaimDispatcher<ContinuousClock>]) async throws {
            let stop = StopSignal()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for dispatcher in dispatchers { group.addTask { await dispatcher.run(stop: stop) } }
                let deadline = ContinuousClock.now + .seconds(180)
                while try await depth(subscription) > 0, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                stop.fire()
                try await group.waitForAll()
            }
        }
    }

    func withFixture(_ body: (Fixture) async throws -> Void) async throws {
        let receiver = try await WebhookReceiver.start()
        let http = CurlHTTPClient()
        let result: Result<Void, any Error>
        do {
            try await TestDatabase.withClient { client, schema in
                let database = TestDatabase.database(client, schema)
                try await PostgresSchema.migrate(database)
                try await body(Fixture(receiver: receiver, http: http, database: database, client: client))
            }
            result = .success(())
        } catch {
            result = .failure(error)
        }
        await http.shutdown()
        try await receiver.shutdown()
        try result.get()
    }

    @Test(arguments: [1, 5])
    func threeInstancesSendEachEventOnce(batchSize: Int) async throws {
        try await withFixture { fixture in
            let subscription = fixture.subscription("all") {
                $0.batchSize = batchSize
                $0.concurrency = 4
            }
            let ids = try await fixture.queue(600, for: ["all"])
            try await fixture.drain("all", with: (1...3).map { fixture.dispatcher(subscription, instance: "relay-\($0)") })
            let sent = fixture.eventIDs(sentTo: "all")
            #expect(sent.count == ids.count, "each event once")
            #expect(Set(sent) == Set(ids))
        }
    }

    @Test func failuresAreRetriedUntilDelivered() async throws {
        try await withFixture { fixture in
            let subscription = fixture.subscription("mixed") { $0.retry.maxAttempts = 3 }
            // Two 500s, then 200, for each of two events: within three attempts, and four failures in all, one
            // short of what opens the breaker.
            fixture.receiver.scriptEachID("/hooks/mixed", [.status(500), .status(500)], then: .ok)
            let ids = try await fixture.queue(2, for: ["mixed"])
            try await fixture.drain("mixed", with: [fixture.dispatcher(subscription, instance: "relay-1")])
            let sent = fixture.eventIDs(sentTo: "mixed")
            #expect(sent.count == 3 * ids.count, "two failures and a success each")
            #expect(try await PostgresDeadLetters(fixture.database).deadLetters(DeadLetterFilter()).isEmpty)
        }
    }

    @Test func aFinalAnswerIsADeadLetterWithItsReasonAndResponse() async throws {
        try await withFixture { fixture in
            let subscription = fixture.subscription("bad")
            fixture.receiver.script("/hooks/bad", [], then: .status(400, body: "no such list"))
            try await fixture.queue(3, for: ["bad"])
            try await fixture.drain("bad", with: [fixture.dispatcher(subscription, instance: "relay-1")])
            let letters = try await PostgresDeadLetters(fixture.database).deadLetters(DeadLetterFilter())
            #expect(letters.count == 3)
            #expect(letters.allSatisfy { $0.reason == "http_400" && $0.status == 400 && $0.attempts == 1 })
            #expect(fixture.eventIDs(sentTo: "bad").count == 3, "a final answer is not retried")
        }
    }

    /// An instance that dies mid-request leaves its claims; they go to another instance once their visibility
    /// timeout passes, and nothing is lost.
    @Test func claimsOfAStoppedInstanceGoToAnotherAfterTheirTimeout() async throws {
        try await withFixture { fixture in
            let subscription = fixture.subscription("slow") { $0.concurrency = 4 }
            // The first four requests never get an answer: relay-1 is cut off with them out.
            fixture.receiver.script("/hooks/slow", Array(repeating: .neverAnswer, count: 4), then: .ok)
            let ids = try await fixture.queue(20, for: ["slow"])
            let doomed = fixture.dispatcher(subscription, instance: "relay-1", visibility: .seconds(1))
            let run = Task { await doomed.run() }
            #expect(await fixture.receiver.waitUntil { $0.requests(to: "/hooks/slow").count >= 4 })
            run.cancel()
            await run.value
            // Its rows keep its name until another instance claims them (their timeout may have passed already).
            let rows = try await fixture.client.query(
                "SELECT count(*)::int8 FROM \(unescaped: fixture.database.schema).delivery WHERE claimed_by = 'relay-1'")
            var held = 0
            for try await count in rows.decode(Int64.self) { held = Int(count) }
            #expect(held == 4, "relay-1's claims outlive it")
            try await fixture.drain("slow", with: [fixture.dispatcher(subscription, instance: "relay-2")])
            let sent = fixture.eventIDs(sentTo: "slow")
            #expect(Set(sent) == Set(ids), "nothing lost")
            #expect(sent.count == ids.count + 4, "only the four cut off went twice")
        }
    }

    /// A webhook's `rateLimit` holds for every instance together: three instances at 20 a second send no faster
    /// than one would.
    @Test func aRateLimitHoldsForEveryInstanceTogether() async throws {
        try await withFixture { fixture in
            let subscription = fixture.subscription("limited") {
                $0.rateLimit = RateLimit(perSecond: 20, burst: 5)
                $0.concurrency = 8
            }
            try await fixture.queue(45, for: ["limited"])
            try await fixture.drain("limited", with: (1...3).map { fixture.dispatcher(subscription, instance: "relay-\($0)") })
            let times = fixture.receiver.record.requests(to: "/hooks/limited").map(\.receivedAt).sorted()
            #expect(times.count == 45)
            // 5 at once, then 20 a second: the last no sooner than 2 s after the first.
            let span = (times.last ?? 0) - (times.first ?? 0)
            #expect(span >= 1_900, "45 requests took \(span) ms at 20/s with a burst of 5 across three instances")
        }
    }
}

extension ClaimDispatcherTests {
    /// Failures seen by several instances open one breaker for all of them: while it is open, none sends.
    @Test func failuresOnSeveralInstancesOpenOneBreakerForAll() async throws {
        try await withFixture { fixture in
            let subscription = fixture.subscription("down") { $0.concurrency = 2 }
            fixture.receiver.script("/hooks/down", [], then: .status(500))
            try await fixture.queue(200, for: ["down"])
            let stop = StopSignal()
            let dispatchers = (1...3).map { fixture.dispatcher(subscription, instance: "relay-\($0)") }
            let runs = dispatchers.map { dispatcher in Task { await dispatcher.run(stop: stop) } }
            // Five failures open it (the default threshold), for five seconds at first.
            #expect(await fixture.receiver.waitUntil { $0.requests(to: "/hooks/down").count >= 5 })
            try await Task.sleep(for: .seconds(1))
            stop.fire()
            for run in runs { await run.value }
            let sent = fixture.receiver.record.requests(to: "/hooks/down").count
            // Five, and at most the six requests already out when the fifth failed; with a breaker per instance
            // (or none) the retries, 10-20 ms apart, would have sent hundreds in that second.
            #expect(sent <= 5 + 6, "\(sent) requests reached a webhook whose breaker was open for every instance")
            #expect(try await fixture.depth("down") == 200, "nothing lost")
        }
    }
}

extension ClaimDispatcherTests {
    /// `pauseAfter` dead letters in a row, counted across two instances, pause the subscription for both: what is
    /// left stays queued, a failed probe is not dead-lettered, and a `resume` from anywhere lets both send again.
    @Test func deadLettersInARowPauseEveryInstanceUntilResumed() async throws {
        try await withFixture { fixture in
            let subscription = fixture.subscription("paused") {
                $0.pauseAfter = 3
                $0.concurrency = 1
            }
            fixture.receiver.script("/hooks/paused", [], then: .status(400))
            let ids = try await fixture.queue(40, for: ["paused"])
            let letters = PostgresDeadLetters(fixture.database)
            let pauses = PostgresPauses(fixture.database)
            let stop = StopSignal()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for instance in ["relay-1", "relay-2"] {
                    let dispatcher = fixture.dispatcher(subscription, instance: instance)
                    group.addTask { await dispatcher.run(stop: stop) }
                }
                defer { stop.fire() }
                #expect(try await fixture.until { try await pauses.pause(of: "paused") != nil })
                let pause = try #require(try await pauses.pause(of: "paused"))
                #expect(pause.reason.hasPrefix("paused after ") && pause.reason.hasSuffix(" consecutive dead letters (HTTP 400)"), "\(pause.reason)")

                // A probe due now: one instance sends one event; its 400 keeps it queued, not dead-lettered.
                let sentBeforeProbe = fixture.eventIDs(sentTo: "paused").count
                try await fixture.client.query(
                    "UPDATE \(unescaped: fixture.database.schema).subscription_pause SET probe_at = now() - interval '1 second'")
                #expect(await fixture.receiver.waitUntil { $0.requests(to: "/hooks/paused").count > sentBeforeProbe })
                // Every outcome recorded, the probe's too.
                #expect(try await fixture.until { try await PostgresStatus(fixture.database).inFlight().isEmpty })
                let deadLettered = try await letters.countDeadLetters(DeadLetterFilter())
                #expect(deadLettered == 3, "the third in a row pauses; a request the other instance had out stays queued")
                // Three dead letters, at most one out on the other instance, and the probe.
                #expect(fixture.eventIDs(sentTo: "paused").count <= 5, "only the probe went while paused")
                #expect(try await fixture.depth("paused") == 37)

                fixture.receiver.script("/hooks/paused", [], then: .ok)
                #expect(try await pauses.resume("paused"))
                #expect(try await fixture.until { try await fixture.depth("paused") == 0 })
                #expect(try await letters.countDeadLetters(DeadLetterFilter()) == deadLettered, "nothing dead-lettered after the pause")
                #expect(Set(fixture.eventIDs(sentTo: "paused")) == Set(ids))
            }
        }
    }
}

extension ClaimDispatcherTests.Fixture {
    /// Whether `condition` came true within two minutes, read every 20 ms: a ceiling for a loaded machine, where
    /// alone each wait here takes a second or two.
    func until(_ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}

extension ClaimDispatcherTests {
    /// A 429 is flow control on PostgreSQL too: after one with `Retry-After`, the instance sends nothing to the
    /// webhook until then; everything arrives, nothing is dead-lettered, and the breaker stays closed. One request
    /// at a time, so that no request already on its way when a 429 comes back can pass for one sent after it.
    @Test func aThrottlingReceiverIsWaitedForAndNeverOpensTheBreaker() async throws {
        try await withFixture { fixture in
            fixture.receiver.scriptEachID("/hooks/t", [.tooManyRequests(retryAfter: 1), .tooManyRequests(retryAfter: 1)])
            let subscription = fixture.subscription("t") { $0.concurrency = 1 }
            let ids = try await fixture.queue(5, for: ["t"])
            try await fixture.drain("t", with: [fixture.dispatcher(subscription, instance: "relay-1")])
            let requests = fixture.receiver.record.requests(to: "/hooks/t")
            #expect(Set(fixture.eventIDs(sentTo: "t")) == Set(ids))
            #expect(requests.filter { $0.answeredStatus == 200 }.count == 5)
            #expect(requests.count == 15, "two 429s and a success each")
            #expect(try await PostgresDeadLetters(fixture.database).countDeadLetters(DeadLetterFilter()) == 0)
            let permission = try await PostgresWebhookGuards(fixture.database).permission(
                "webhook/" + WebhookRequestBuilder.fingerprint(of: subscription.webhook), rule: SharedBreakerRule(probeTimeout: .seconds(5)))
            #expect(permission == .send, "429s are not failures")
            // After each 429, the next request (of any event) came no sooner than its Retry-After.
            let arrivals: [Int64] = requests.map(\.receivedAt)
            let throttled: [Bool] = requests.map { $0.answeredStatus == 429 }
            var gaps: [Int64] = []
            for index in arrivals.indices.dropLast() where throttled[index] {
                let gap: Int64 = arrivals[index + 1] - arrivals[index]
                gaps.append(gap)
            }
            #expect(gaps.count == 10 && gaps.allSatisfy { $0 >= 1_000 }, "gaps after a 429: \(gaps) ms")
        }
    }
}
