import CurlHTTP
import Foundation
import IntilerySimulator
import RelayCore
import RelayJSON
import Testing

@Suite(.timeLimit(.minutes(2))) struct DispatcherTests {
    static func outboxEmpty(_ name: String) -> @Sendable (StateStore) async throws -> Bool {
        { store in try await store.status(sources: [], subscriptions: [name]).subscriptions[0].pending == 0 }
    }

    @Test func signingMatchesTheStandardWebhooksTestVector() throws {
        let key = try #require(WebhookSigningKey(Secret(DeliveryFixture.secret, origin: .literal)))
        let signature = WebhookRequestBuilder.signature(
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: "1614265330", body: Array(#"{"test": 2432232314}"#.utf8), key: key)
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    }

    /// The same events give the same batch id from every release: the hash of the ids must never change.
    @Test func batchIDsAreTheFirstTwelveBytesOfTheSHA256OfTheIDsJoinedByNewlines() {
        // Expected values from Python's hashlib.sha256(...).hexdigest()[:24].
        #expect(WebhookRequestBuilder.webhookID(subscription: "s", eventIDs: ["evt-1", "evt-2", "evt-3"], batched: true)
            == "s:batch-8d3f182a04c6d2bcb51a2e6f")
        #expect(WebhookRequestBuilder.webhookID(subscription: "s", eventIDs: ["é", ""], batched: true) == "s:batch-edd3a863872a04239eb29ad4")
        #expect(WebhookRequestBuilder.webhookID(subscription: "s", eventIDs: [""], batched: true) == "s:batch-e3b0c44298fc1c149afbf4c8")
        #expect(WebhookRequestBuilder.webhookID(subscription: "s", eventIDs: ["evt-1"], batched: false) == "s:evt-1")
    }

    /// A batch stored before `batchSize` went down to 1 still goes as a batch: a JSON array under its stored id.
    @Test func aStoredBatchGoesAsABatchAfterBatchSizeWentDownToOne() throws {
        let subscription = SubscriptionConfig(name: "s", source: "acme", webhook: WebhookConfig(url: "http://127.0.0.1:1/hook"))
        #expect(subscription.webhook.batchSize == 1)
        let members = (0..<3).map { n in
            Delivery(
                id: Int64(n), subscription: "s", eventID: "e\(n)", eventTime: Timestamp(millisecondsSinceEpoch: Int64(n)), action: "click",
                timeValue: "\(n)", payload: Array(#"{"eventID":"e\#(n)"}"#.utf8), attempts: 1, firstAttemptAt: nil,
                batchID: "s:batch-stored", batchPosition: n, nextAttemptAt: Timestamp(millisecondsSinceEpoch: 0))
        }
        let request = WebhookRequestBuilder(subscription: subscription).request(for: members, now: Timestamp(millisecondsSinceEpoch: 0))
        #expect(request.headers["webhook-id"] == "s:batch-stored")
        #expect(try JSONParser.parse(try #require(request.body)).arrayValue?.count == 3)
    }

    @Test(arguments: [PayloadFormat.event, .envelope], [1, 3])
    func signedRequestsVerifyAtTheReceiverAndCarryTheRightBody(_ payload: PayloadFormat, _ batchSize: Int) async throws {
        try await withDelivery { fixture in
            let subscription = fixture.subscription("signed") {
                $0.signingKey = WebhookSigningKey(Secret(DeliveryFixture.secret, origin: .literal))
                $0.payload = payload
                $0.batchSize = batchSize
                $0.headers = [("Authorization", Secret("Bearer header-secret", origin: .literal))]
            }
            fixture.receiver.verifySignatures(on: "/hooks/signed", secret: DeliveryFixture.secret)
            let ids = try await fixture.enqueue(5, for: ["signed"])
            try await fixture.deliver([fixture.dispatcher(subscription)], until: Self.outboxEmpty("signed"))
            let requests = fixture.receiver.record.requests(to: "/hooks/signed")
            #expect(requests.count == (batchSize == 1 ? 5 : 2))
            #expect(requests.allSatisfy { $0.signatureValid == true })
            #expect(requests.allSatisfy { $0.header("authorization") == "Bearer header-secret" })
            #expect(requests.allSatisfy { $0.header("user-agent") == "intilery-relay/\(RelayVersion.current)" })
            #expect(requests.allSatisfy { $0.header("content-type") == "application/json" })
            var delivered: [String] = []
            for request in requests {
                let body = try JSONParser.parse(request.body)
                let items = batchSize == 1 ? [body] : try #require(body.arrayValue)
                if batchSize > 1 {
                    #expect(request.webhookID?.hasPrefix("signed:batch-") == true)
                }
                for item in items {
                    let object = try #require(item.objectValue)
                    let event = payload == .event ? object : try #require(object["data"]?.objectValue)
                    let id = try #require(event["eventID"]?.stringValue)
                    delivered.append(id)
                    if payload == .envelope {
                        #expect(object["id"] == .string("signed:\(id)"))
                        #expect(object["type"] == .string("email_click"))
                        #expect(object["subscription"] == .string("signed"))
                        #expect(object["timestamp"] == event["timestamp"])
                    } else if batchSize == 1 {
                        #expect(request.webhookID == "signed:\(id)")
                    }
                }
            }
            #expect(delivered.sorted() == ids.sorted())
            if payload == .event && batchSize == 1 {
                // The event's bytes exactly as received, escapes and all.
                #expect(String(decoding: requests[0].body, as: UTF8.self).contains(#""note":"caf\u00e9""#))
            }
        }
    }

    @Test func webhookIDIsTheSameOnEveryRetryAndAfterARestart() async throws {
        try await withDelivery { fixture in
            let single = fixture.subscription("single") { $0.retry.initialBackoff = .seconds(1) }
            let batched = fixture.subscription("batched") { $0.batchSize = 4 }
            fixture.receiver.script("/hooks/single", [.status(500), .status(502)], then: .ok)
            fixture.receiver.script("/hooks/batched", [.status(503)], then: .ok)
            try await fixture.enqueue(1, for: ["single"])
            try await fixture.enqueue(3, for: ["batched"], startingAt: 100)
            // First run: until the batch has failed once; then a new dispatcher, as after a restart.
            try await fixture.deliver([fixture.dispatcher(single), fixture.dispatcher(batched)]) { _ in
                fixture.receiver.record.countsByPath["/hooks/batched", default: 0] >= 1
                    && fixture.receiver.record.countsByPath["/hooks/single", default: 0] >= 1
            }
            try await fixture.enqueue(2, for: ["batched"], startingAt: 200)
            try await fixture.deliver([fixture.dispatcher(single), fixture.dispatcher(batched)]) { store in
                let single = try await Self.outboxEmpty("single")(store)
                let batched = try await Self.outboxEmpty("batched")(store)
                return single && batched
            }
            // A request the first run's stop cut short is sent again by the second (at least once): counts are minimums,
            // ids and bodies exact.
            let singles = fixture.receiver.record.requests(to: "/hooks/single")
            #expect(Array(singles.compactMap(\.answeredStatus).prefix(3)) == [500, 502, 200])
            #expect(Set(singles.map(\.webhookID)) == ["single:evt-0"])
            let batches = fixture.receiver.record.requests(to: "/hooks/batched")
            let first = try #require(batches.first)
            let retries = batches.filter { $0.webhookID == first.webhookID }
            #expect(retries.count >= 2)
            #expect(Set(retries.map(\.body)).count == 1)
            #expect(try JSONParser.parse(retries[0].body).arrayValue?.count == 3)
            // The first batch and the one composed of the two rows queued later.
            #expect(Set(batches.map(\.webhookID)).count == 2)
        }
    }

    /// Run again after a cancelled run (whose cancel aborted what it had started), a dispatcher delivers everything,
    /// sending again only what the cancel cut short.
    @Test(.timeLimit(.minutes(1))) func aDispatcherRunAgainAfterACancelDeliversEverything() async throws {
        try await withDelivery { fixture in
            let subscription = fixture.subscription("again") { $0.concurrency = 4 }
            try await fixture.enqueue(50, for: ["again"])
            let dispatcher = fixture.dispatcher(subscription)
            try await fixture.deliver([dispatcher]) { _ in fixture.receiver.record.countsByPath["/hooks/again", default: 0] >= 1 }
            try await fixture.deliver([dispatcher], until: Self.outboxEmpty("again"))
            let sent = fixture.eventIDs(sentTo: "again")
            #expect(Set(sent).count == 50)
            #expect(sent.count <= 50 + 4, "\(sent.count) requests for 50 events")
        }
    }

    /// A dead letter's time is when its answer was judged, not when its attempt started: an attempt started
    /// before `maxAge` and failed after it is dead after `maxAge`.
    @Test func aDeadLetterIsDeadWhenItsAnswerIsJudged() async throws {
        try await withDelivery(autoAdvance: false) { fixture in
            let subscription = fixture.subscription("slow")
            fixture.receiver.script("/hooks/slow", [.status(400)])
            // The request takes 30 s of the relay's clock.
            let clock = fixture.clock
            fixture.receiver.observe { _ in clock.advance(by: .seconds(30)) }
            let attemptedAt = fixture.now
            try await fixture.enqueue(1, for: ["slow"])
            try await fixture.deliver([fixture.dispatcher(subscription)], until: Self.outboxEmpty("slow"))
            let dead = try #require(try await fixture.store.deadLetters(subscription: "slow").first)
            #expect(dead.lastAttemptAt == attemptedAt)
            #expect(dead.deadAt == attemptedAt.advanced(by: .seconds(30)))
        }
    }

    /// While every slot is busy, the next full batch is composed and stored ahead: after a stop it stays stored as
    /// composed, and the next run sends it whole, under the id it was given, once.
    @Test func aBatchComposedAheadOfAFreeSlotIsStoredAndSentAsComposedAfterARestart() async throws {
        try await withDelivery(autoAdvance: false) { fixture in
            // One slot; after the first request, the rate limit holds the next one on a clock that does not move.
            let limited = fixture.subscription("ahead") {
                $0.batchSize = 4
                $0.concurrency = 1
                $0.rateLimit = RateLimit(perSecond: 1, burst: 1)
            }
            let ids = try await fixture.enqueue(12, for: ["ahead"])
            var composed: [String: [String]] = [:]
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await fixture.writer.run() }
                group.addTask { try await fixture.dispatcher(limited).run() }
                let deadline = ContinuousClock.now.advanced(by: .seconds(20))
                while ContinuousClock.now < deadline {
                    let rows = try await fixture.store.deliveries(
                        subscription: "ahead", due: Timestamp(millisecondsSinceEpoch: .max), limit: 100, strict: false, excluding: [])
                    composed = Dictionary(grouping: rows.filter { $0.batchID != nil }, by: { $0.batchID! }).mapValues { $0.map(\.eventID) }
                    // The first batch delivered (its rows gone), two more stored as composed.
                    if composed.count == 2, !composed.values.contains(where: { $0.contains(ids[0]) }) { break }
                    try await Task.sleep(for: .milliseconds(1))
                }
                group.cancelAll()
            }
            try await fixture.writer.flush()
            // The first batch went; the second waits for the rate limit, and the third was composed meanwhile.
            let members: Set<Set<String>> = Set(composed.values.map { Set($0) })
            #expect(members == [Set(ids[4..<8]), Set(ids[8..<12])])

            let unlimited = fixture.subscription("ahead") {
                $0.batchSize = 4
                $0.concurrency = 1
            }
            try await fixture.deliver([fixture.dispatcher(unlimited)], until: Self.outboxEmpty("ahead"))
            let requests = fixture.receiver.record.requests(to: "/hooks/ahead")
            #expect(requests.count == 3)
            #expect(Set(requests.dropFirst().map(\.webhookID)) == Set(composed.keys))
            let sent = requests.map(BatchOrderTests.eventIDs)
            #expect(sent.flatMap { $0 } == ids, "each event once, in the batches as composed")
        }
    }

    @Test func finalStatusesDeadLetterAfterOneAttemptAndReplayDeliversThem() async throws {
        try await withDelivery { fixture in
            for (path, reply) in [("gone", ReceiverReply.status(410)), ("moved", .redirect(to: "/x")), ("bad", .status(400, body: "nope"))] {
                fixture.receiver.script("/hooks/\(path)", [reply, reply], then: .ok)
            }
            let subscriptions = ["gone", "moved", "bad"].map { fixture.subscription($0) }
            for (index, subscription) in subscriptions.enumerated() {
                try await fixture.enqueue(2, for: [subscription.name], startingAt: index * 10)
            }
            try await fixture.deliver(subscriptions.map { fixture.dispatcher($0) }) { store in
                try await store.deadLetters().count == 6
            }
            let dead = try await fixture.store.deadLetters()
            #expect(dead.allSatisfy { $0.attempts == 1 })
            #expect(Set(dead.map(\.reason)) == ["http_410", "redirect_not_followed", "http_400"])
            #expect(dead.first { $0.subscription == "bad" }?.responseSnippet == Array("nope".utf8))
            #expect(dead.first { $0.subscription == "gone" }?.status == 410)
            #expect(fixture.receiver.record.countsByPath.values.reduce(0, +) == 6)
            #expect(fixture.receiver.record.countsByPath["/x"] == nil)

            #expect(try await fixture.store.replayDeadLetters(subscription: "gone", now: fixture.now) == 2)
            try await fixture.deliver(subscriptions.map { fixture.dispatcher($0) }, until: Self.outboxEmpty("gone"))
            #expect(fixture.receiver.record.successesByPath["/hooks/gone"] == 2)
            #expect(try await fixture.store.deadLetters(subscription: "gone").isEmpty)
            #expect(try await fixture.store.deadLetters().count == 4)
        }
    }

    @Test func neverAnsweringEndpointDeadLettersAfterMaxAttemptsTimeouts() async throws {
        try await withDelivery { fixture in
            fixture.receiver.script("/hooks/hang", [.neverAnswer, .neverAnswer, .neverAnswer], then: .ok)
            let subscription = fixture.subscription("hang") {
                $0.timeout = .milliseconds(150)
                $0.retry.maxAttempts = 3
            }
            try await fixture.enqueue(1, for: ["hang"])
            try await fixture.deliver([fixture.dispatcher(subscription)]) { store in try await store.deadLetters().count == 1 }
            let dead = try #require(try await fixture.store.deadLetters().first)
            #expect(dead.attempts == 3)
            #expect(dead.reason == "max_attempts (last: timeout)")
            #expect(fixture.receiver.record.countsByPath["/hooks/hang"] == 3)
            try await fixture.store.replayDeadLetters(now: fixture.now)
            try await fixture.deliver([fixture.dispatcher(subscription)], until: Self.outboxEmpty("hang"))
            #expect(fixture.receiver.record.successesByPath["/hooks/hang"] == 1)
        }
    }

    @Test func retryAfterIsHonouredInFull() async throws {
        try await withDelivery { fixture in
            fixture.receiver.script("/hooks/busy", [.tooManyRequests(retryAfter: 7), .status(503, headers: ["retry-after": "20"])], then: .ok)
            let subscription = fixture.subscription("busy")
            try await fixture.enqueue(1, for: ["busy"])
            try await fixture.deliver([fixture.dispatcher(subscription)], until: Self.outboxEmpty("busy"))
            let times = fixture.receiver.record.requests(to: "/hooks/busy").map(\.receivedAt)
            #expect(times.count == 3)
            // Never before what Retry-After asked (the backoff alone would have retried within a second or two).
            // Not an exact figure: on the auto-advancing test clock, a one-second look for work that loses its race
            // to a wake-up may still move time when its task runs. The schedule itself is checked exactly in
            // deliveryPolicyFollowsTheSpecStepByStep.
            #expect(times[1] - times[0] >= 7_000, "\(times)")
            #expect(times[2] - times[1] >= 20_000, "\(times)")
        }
    }

    @Test func strictOrderingHoldsAcrossFailuresAndRetries() async throws {
        try await withDelivery { fixture in
            fixture.receiver.script("/hooks/strict", [.status(500), .ok, .status(503), .status(500), .ok, .ok, .status(429)], then: .ok)
            let subscription = fixture.subscription("strict") {
                $0.ordering = .strict
                $0.concurrency = 8
            }
            let ids = try await fixture.enqueue(30, for: ["strict"])
            try await fixture.deliver([fixture.dispatcher(subscription)], until: Self.outboxEmpty("strict"))
            let requests = fixture.receiver.record.requests(to: "/hooks/strict")
            let delivered = requests.filter { $0.answeredStatus == 200 }.compactMap { $0.webhookID?.dropFirst("strict:".count) }.map(String.init)
            #expect(delivered == ids)
            // Every request, failed ones included, is for the head of the line: ids never go backwards.
            let sequence = requests.compactMap { $0.webhookID.flatMap { Int($0.split(separator: "-").last!) } }
            #expect(sequence == sequence.sorted())
        }
    }

    @Test func rowsHeldBackByAnOpenBreakerAgeOutByMaxAgeFromWhenTheyWereQueued() async throws {
        try await withDelivery { fixture in
            let subscription = fixture.subscription("down") {
                $0.retry.maxAge = .seconds(3600)
                $0.pauseAfter = 0
            }
            let queuedAt = fixture.now
            fixture.receiver.outage("/hooks/down", until: queuedAt.advanced(by: .seconds(30 * 24 * 3600)).millisecondsSinceEpoch)
            try await fixture.enqueue(200, for: ["down"])
            try await fixture.deliver([fixture.dispatcher(subscription)], until: Self.outboxEmpty("down"))
            let dead = try await fixture.store.deadLetters(subscription: "down")
            #expect(dead.count == 200)
            // Not before maxAge since queued: a row an attempt carried is dead when its answer is judged, never at
            // the attempt's start. The ones the breaker held back go at a sweep after the grace, which runs when the
            // dispatcher wakes (a breaker probe, 5 min, at most; with the probes' own requests, up to one each per
            // place). Rows an attempt carried die at its answer, which this auto-advancing clock can put any time
            // later: it jumps whenever the dispatcher sleeps, real HTTP in flight or not.
            let deadline = queuedAt.advanced(by: .seconds(3600))
            let swept = deadline.advanced(
                by: Dispatcher<TestClock>.expiryGrace + Dispatcher<TestClock>.expiryInterval + .seconds(300) * subscription.webhook.concurrency)
            let early = dead.filter { $0.deadAt < deadline }
            #expect(early.isEmpty, "\(early.map { "\($0.deadAt.iso8601) \($0.reason) last attempt \($0.lastAttemptAt?.iso8601 ?? "-")" })")
            let neverAttempted = dead.filter { $0.reason == "max_age (never attempted)" }
            #expect(neverAttempted.allSatisfy { $0.deadAt >= deadline.advanced(by: Dispatcher<TestClock>.expiryGrace) && $0.deadAt <= swept },
                    "\(neverAttempted.map(\.deadAt.iso8601).min() ?? "-") \(neverAttempted.map(\.deadAt.iso8601).max() ?? "-")")
            // Most never reached an attempt: the breaker held them back.
            #expect(dead.filter { $0.reason == "max_age (never attempted)" }.count > 150, "\(Set(dead.map(\.reason)))")
            #expect(dead.allSatisfy { $0.reason.hasPrefix("max_age") })
            #expect(fixture.receiver.record.countsByPath["/hooks/down", default: 0] < 3600 / 5)
        }
    }

    @Test func deliveryPolicyFollowsTheSpecStepByStep() {
        var random = SeededRandom(seed: 3)
        let policy = DeliveryPolicy(retry: RetryPolicy())
        let start = Timestamp(millisecondsSinceEpoch: 0)
        func decide(_ status: Int?, error: CurlHTTPError? = nil, retryAfter: Duration? = nil, attempts: Int, at now: Timestamp = start)
            -> DeliveryOutcome.Decision
        {
            policy.decide(
                status: status, transportError: error, retryAfter: retryAfter, attempts: attempts, queuedAt: start,
                now: now, random: &random)
        }
        #expect(decide(204, attempts: 1) == .delivered)
        for status in [408, 425, 429, 500, 502, 503, 599] {
            guard case .retry = decide(status, attempts: 1) else { Issue.record("\(status) should retry"); continue }
        }
        for status in [301, 302, 304, 400, 401, 404, 410, 422] {
            guard case .deadLetter = decide(status, attempts: 1) else { Issue.record("\(status) should dead-letter"); continue }
        }
        for n in 1...20 {
            guard case .retry(let at) = decide(500, attempts: n) else { Issue.record("attempt \(n)"); continue }
            let wait = Duration.milliseconds(at.millisecondsSinceEpoch)
            #expect(wait >= .seconds(1) && wait <= min(.seconds(3600), .seconds(1 << min(n - 1, 20))), "attempt \(n): \(wait)")
        }
        #expect(decide(429, retryAfter: .seconds(90), attempts: 3) == .retry(at: start.advanced(by: .seconds(90))))
        #expect(decide(503, retryAfter: .seconds(7200), attempts: 3) == .retry(at: start.advanced(by: .seconds(3600))))
        guard case .retry(let at) = decide(500, retryAfter: .seconds(90), attempts: 1), at <= start.advanced(by: .seconds(1)) else {
            Issue.record("Retry-After applies to 429 and 503 only")
            return
        }
        #expect(decide(500, attempts: 100) == .deadLetter(reason: "max_attempts (last: http_500)"))
        #expect(decide(nil, error: .timeout(url: "http://x/"), attempts: 100) == .deadLetter(reason: "max_attempts (last: timeout)"))
        #expect(decide(500, attempts: 5, at: start.advanced(by: .seconds(72 * 3600))) == .deadLetter(reason: "max_age (last: http_500)"))
        // A retry that would land past maxAge is moved to the deadline: one last try there.
        let nearEnd = start.advanced(by: .seconds(72 * 3600 - 10))
        #expect(decide(500, attempts: 50, at: nearEnd) == .retry(at: start.advanced(by: .seconds(72 * 3600))))
    }

    @Test func circuitBreakerOpensProbesAndCloses() {
        let breaker = CircuitBreaker(threshold: 3, initialInterval: .seconds(5), maximumInterval: .seconds(20))
        let t0 = Timestamp(millisecondsSinceEpoch: 0)
        for _ in 0..<2 { breaker.record(success: false, now: t0) }
        #expect(breaker.permission(now: t0) == .send)
        breaker.record(success: false, now: t0)
        #expect(breaker.permission(now: t0) == .waitUntil(t0.advanced(by: .seconds(5))))
        #expect(breaker.permission(now: t0.advanced(by: .seconds(5))) == .probe)
        #expect(breaker.permission(now: t0.advanced(by: .seconds(5))) != .probe)
        breaker.record(success: false, now: t0.advanced(by: .seconds(5)))
        #expect(breaker.permission(now: t0.advanced(by: .seconds(10))) == .waitUntil(t0.advanced(by: .seconds(15))))
        #expect(breaker.permission(now: t0.advanced(by: .seconds(15))) == .probe)
        breaker.record(success: true, now: t0.advanced(by: .seconds(15)))
        #expect(breaker.permission(now: t0.advanced(by: .seconds(15))) == .send)
    }

    @Test func oldDeadLettersArePrunedByRetention() async throws {
        try await withDelivery { fixture in
            fixture.receiver.script("/hooks/gone", [], then: .status(410))
            try await fixture.enqueue(3, for: ["gone"])
            try await fixture.deliver([fixture.dispatcher(fixture.subscription("gone"))]) { try await $0.deadLetters().count == 3 }
            #expect(try await fixture.store.pruneDeadLetters(before: fixture.now.advanced(by: .seconds(-60))) == 0)
            #expect(try await fixture.store.pruneDeadLetters(before: fixture.now.advanced(by: .seconds(1))) == 3)
        }
    }
}

@Suite(.timeLimit(.minutes(2))) struct DeliveryIsolationTests {
    @Test func aHangingAndAFailingEndpointDoNotHoldBackAHealthyOne() async throws {
        try await withDelivery { fixture in
            fixture.receiver.script("/hooks/hang", [], then: .neverAnswer)
            fixture.receiver.script("/hooks/flaky", [], then: .status(500))
            let hang = fixture.subscription("hang") { $0.timeout = .seconds(60) }
            let flaky = fixture.subscription("flaky")
            // The flaky one's backoffs move this auto-advancing clock days ahead in a few real seconds: the healthy
            // one's events must not age out meanwhile.
            let healthy = fixture.subscription("healthy") { $0.retry.maxAge = .seconds(365 * 86_400) }
            // All three on one source: each event goes to every subscription.
            try await fixture.enqueue(2_000, for: ["hang", "flaky", "healthy"])
            try await fixture.deliver([fixture.dispatcher(hang), fixture.dispatcher(flaky), fixture.dispatcher(healthy)]) {
                try await DispatcherTests.outboxEmpty("healthy")($0)
            }
            let record = fixture.receiver.record
            #expect(record.successesByPath["/hooks/healthy"] == 2_000)
            #expect(record.countsByPath["/hooks/healthy"] == 2_000)
            // The hanging endpoint holds its own 4 slots and nothing else.
            #expect(record.countsByPath["/hooks/hang"] == 4)
            #expect(record.successesByPath["/hooks/flaky"] == nil)
            #expect(try await fixture.pending("hang") == 2_000)
        }
    }
}
