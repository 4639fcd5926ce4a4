import IntilerySimulator
import RelayCore
import Testing

/// `webhook.pauseAfter`: a receiver that rejects everything pauses its subscription instead of dead-lettering the
/// whole backlog; probes, `resume` and a changed webhook bring it back.
@Suite struct PauseTests {
    @Test func aReceiverRejectingEverythingPausesAfterTwentyAndAProbeResumes() async throws {
        try await withDelivery { fixture in
            fixture.receiver.script("/hooks/p", [], then: .status(401))
            let subscription = fixture.subscription("p")
            try await fixture.enqueue(100, for: ["p"])
            let dispatcher = fixture.dispatcher(subscription)
            let requestsToPause = try await fixture.deliverUntilPaused(dispatcher, "p")
            let dead = try await fixture.store.deadLetters(subscription: "p").count
            #expect(dead == 20, "\(dead) dead letters after \(requestsToPause) requests")
            let pause = try #require(try await fixture.store.pause(of: "p"))
            #expect(pause.reason == "paused after 20 consecutive dead letters (HTTP 401)")
            let status = try await fixture.store.status(sources: [], subscriptions: ["p"]).subscriptions[0]
            #expect(status.pause == pause && status.pending == 80)

            // Still rejecting: one probe every five minutes, none dead-lettered. Requests are told apart by when they
            // were sent, not by when the receiver got them (``DeliveryFixture/sentAt(_:)``).
            let since = pause.since.millisecondsSinceEpoch
            try await fixture.deliver([dispatcher]) { _ in fixture.sentAt("p").filter { $0 > since }.count >= 3 }
            let times = fixture.sentAt("p")
            #expect(times.count == fixture.receiver.record.requests(to: "/hooks/p").count, "every request has a webhook-timestamp")
            let probes = times.filter { $0 > since }.sorted()
            // None sent between the pause and the first probe, five minutes later (the header counts whole seconds).
            #expect(probes.first.map { $0 - since >= 299_000 } == true, "\(probes.map { $0 - since })")
            // Five minutes apart, give or take the seconds the test clock may jump while the loop starts a probe.
            #expect(zip(probes, probes.dropFirst()).allSatisfy { (299_000...315_000).contains($1 - $0) }, "\(probes.map { $0 - since })")
            #expect(try await fixture.store.deadLetters(subscription: "p").count == 20)

            // The receiver is fixed: the next probe delivers and everything else follows.
            fixture.receiver.script("/hooks/p", [], then: .ok)
            try await fixture.deliver([dispatcher], until: DispatcherTests.outboxEmpty("p"))
            #expect(try await fixture.store.pause(of: "p") == nil)
            #expect(try await fixture.store.deadLetters(subscription: "p").count == 20)
        }
    }

    /// Run again under the same pause (as the tests do), a dispatcher keeps the schedule of the probes it sent: the next
    /// probe is five minutes after its last one, not due at once because the pause began over five minutes ago.
    @Test func aDispatcherRunAgainKeepsItsProbeSchedule() async throws {
        try await withDelivery { fixture in
            let (_, dispatcher) = try await fixture.pausedSubscription("s", answering: 401, pauseAfter: 3, events: 10)
            let since = try #require(try await fixture.store.pause(of: "s")).since.millisecondsSinceEpoch
            try await fixture.deliver([dispatcher]) { _ in !fixture.sentAt("s").filter { $0 > since }.isEmpty }
            try await fixture.deliver([dispatcher]) { _ in fixture.sentAt("s").filter { $0 > since }.count >= 2 }
            let probes = fixture.sentAt("s").filter { $0 > since }.sorted()
            #expect(probes.count >= 2 && probes[1] - probes[0] >= 299_000, "\(probes.map { $0 - since })")
        }
    }

    /// One probe at a time: an answer to a request sent before the pause, coming while the probe is out, does not
    /// let a second probe go when the next is due.
    @Test func aLateAnswerFromBeforeThePauseDoesNotLetASecondProbeGo() async throws {
        try await withDelivery(autoAdvance: false) { fixture in
            // Two requests at once: one answered 500 once the probe is out, the other 400 at once, which pauses. The
            // probe and anything after it are never answered.
            let late = ReceiverGate()
            fixture.receiver.script("/hooks/q", [.statusWhenOpened(500, gate: late), .status(400)], then: .neverAnswer)
            let subscription = fixture.subscription("q") {
                $0.pauseAfter = 1
                $0.concurrency = 2
                $0.timeout = .seconds(3_600)
            }
            try await fixture.enqueue(5, for: ["q"])
            let dispatcher = fixture.dispatcher(subscription)
            func requests() -> Int { fixture.receiver.record.requests(to: "/hooks/q").count }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await fixture.writer.run() }
                group.addTask { try await dispatcher.run() }
                while try await fixture.store.pause(of: "q") == nil { try await Task.sleep(for: .milliseconds(5)) }
                // Five minutes on, the probe goes, before the late answer.
                fixture.clock.advance(by: .seconds(300))
                #expect(await fixture.receiver.waitUntil { $0.requests(to: "/hooks/q").count == 3 })
                late.open()
                // The late 500 is recorded as a retry while the probe is out...
                while try await fixture.store.deliveries(
                    subscription: "q", due: Timestamp(millisecondsSinceEpoch: .max), limit: 10, strict: false, excluding: []
                ).allSatisfy({ $0.attempts == 0 }) {
                    try await Task.sleep(for: .milliseconds(5))
                }
                #expect(requests() == 3, "the late answer came before the probe")
                // ...and when the next probe would be due, no other request goes.
                fixture.clock.advance(by: .seconds(301))
                #expect(await !fixture.receiver.waitUntil(timeout: .milliseconds(500)) { $0.requests(to: "/hooks/q").count > 3 })
                group.cancelAll()
            }
        }
    }

    @Test func resumeLiftsThePauseAndAChangedWebhookDoesToo() async throws {
        try await withDelivery { fixture in
            let (subscription, _) = try await fixture.pausedSubscription("r", answering: 400, pauseAfter: 5, events: 30)
            #expect(try await fixture.store.deadLetters(subscription: "r").count == 5)

            // `intilery-relay resume` writes to the store; the running dispatcher notices.
            fixture.receiver.script("/hooks/r", [], then: .ok)
            let pausedAt = fixture.now
            try await fixture.deliver([fixture.dispatcher(subscription)]) { store in
                if try await store.pause(of: "r") != nil { try await store.resume("r") }
                return try await DispatcherTests.outboxEmpty("r")(store)
            }
            #expect(fixture.receiver.record.successesByPath["/hooks/r"] == 25)
            // Well before a probe would have gone.
            #expect(pausedAt.duration(to: fixture.now) < Dispatcher<TestClock>.probeInterval)

            // Paused again, then started with a different webhook (a reload that changed it): resumed at once.
            fixture.receiver.script("/hooks/r", [], then: .status(400))
            try await fixture.enqueue(30, for: ["r"], startingAt: 100)
            _ = try await fixture.deliverUntilPaused(fixture.dispatcher(subscription), "r")
            fixture.receiver.script("/hooks/r2", [], then: .ok)
            var moved = subscription
            moved.webhook.url = fixture.receiver.url("/hooks/r2")
            try await fixture.deliver([fixture.dispatcher(moved)], until: DispatcherTests.outboxEmpty("r"))
            #expect(try await fixture.store.pause(of: "r") == nil)
            let deadAfter = try await fixture.store.deadLetters(subscription: "r").count
            let r2 = fixture.receiver.record.requests(to: "/hooks/r2").compactMap(\.webhookID)
            #expect(fixture.receiver.record.successesByPath["/hooks/r2"] == 25, "dead \(deadAfter), ids \(r2.count) distinct \(Set(r2).count)")
        }
    }
}

extension DeliveryFixture {
    /// Runs `dispatcher` until its subscription is paused; returns how many requests that took.
    func deliverUntilPaused(_ dispatcher: Dispatcher<TestClock>, _ name: String) async throws -> Int {
        try await deliver([dispatcher]) { store in try await store.pause(of: name) != nil }
        return receiver.record.countsByPath["/hooks/\(name)", default: 0]
    }

    /// A subscription `name` (one request at a time) whose receiver answers `status` to everything, with `events`
    /// queued, run until it has paused after `pauseAfter` dead letters; with the dispatcher that ran it.
    func pausedSubscription(
        _ name: String, answering status: Int, pauseAfter: Int, events: Int
    ) async throws -> (SubscriptionConfig, Dispatcher<TestClock>) {
        receiver.script("/hooks/\(name)", [], then: .status(status))
        let subscription = self.subscription(name) {
            $0.pauseAfter = pauseAfter
            $0.concurrency = 1
        }
        try await enqueue(events, for: [name])
        let dispatcher = dispatcher(subscription)
        _ = try await deliverUntilPaused(dispatcher, name)
        return (subscription, dispatcher)
    }

    /// When each request to `/hooks/<name>` was sent (its `webhook-timestamp`, in milliseconds), in arrival order. Not
    /// when it arrived: the test clock runs ahead while nothing is due, so a request cut short as a run stopped may
    /// reach the receiver minutes later on it.
    func sentAt(_ name: String) -> [Int64] {
        receiver.record.requests(to: "/hooks/\(name)").compactMap { $0.header("webhook-timestamp").flatMap { Int64($0) } }
            .map { $0 * 1_000 }
    }
}
