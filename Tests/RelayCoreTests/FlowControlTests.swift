import IntilerySimulator
import RelayCore
import Testing

/// A 429 or 503 is flow control, not an outage (docs/configuration.md, `webhook.retry`).
@Suite struct FlowControlTests {
    @Test func aThrottlingReceiverGetsEverythingSoonAndNeverOpensTheBreaker() async throws {
        try await withDelivery { fixture in
            // Like a rate-limited catch hook: every event's first two attempts get 429 with Retry-After: 1.
            fixture.receiver.scriptEachID("/hooks/t", [.tooManyRequests(retryAfter: 1), .tooManyRequests(retryAfter: 1)])
            let subscription = fixture.subscription("t") { $0.concurrency = 100 }
            let breaker = CircuitBreaker()
            try await fixture.enqueue(300, for: ["t"])
            try await fixture.deliver([fixture.dispatcher(subscription, breaker: breaker)], until: DispatcherTests.outboxEmpty("t"))
            let requests = fixture.receiver.record.requests(to: "/hooks/t")
            #expect(requests.filter { $0.answeredStatus == 200 }.count == 300)
            #expect(requests.count == 900)
            #expect(try await fixture.store.deadLetters().isEmpty)
            #expect(breaker.current == .closed(failures: 0))
            // (How soon is measured with the real binary and the real clock, in DaemonTests: the auto-advancing test
            // clock jumps for every sleeper, so its elapsed time says nothing about concurrent waits.)
            // After a 429, nothing reaches the URL before its Retry-After: not that event, nor any other.
            let throttledAt = requests.filter { $0.answeredStatus == 429 }.map(\.receivedAt)
            for request in requests {
                #expect(!throttledAt.contains { request.receivedAt > $0 && request.receivedAt < $0 + 1_000 })
            }
        }
    }

    @Test func withoutRetryAfterTheInFlightLimitHalvesAndGrowsBack() async {
        let flow = FlowControl()
        for _ in 0..<16 { #expect(await flow.enter()) }
        flow.throttled(retryAfter: nil)
        #expect(flow.current.limit == 8)
        for _ in 0..<16 { flow.leave() }
        // A second 429 halves what is in flight, never below one.
        for _ in 0..<3 { #expect(await flow.enter()) }
        flow.throttled(retryAfter: nil)
        #expect(flow.current.limit == 1)
        flow.throttled(retryAfter: nil)
        #expect(flow.current.limit == 1)
        // Successes add one each, and past the ceiling there is no limit of its own.
        flow.answered()
        #expect(flow.current.limit == 2)
        for _ in 0..<FlowControl.ceiling { flow.answered() }
        #expect(flow.current.limit == nil)
        for _ in 0..<3 { flow.leave() }
        // A user that counts what it has in flight itself says how much that is.
        let counted = FlowControl()
        counted.throttled(retryAfter: nil, inFlight: 12)
        #expect(counted.current.limit == 6)
    }

    @Test func aFullLimitMakesTheNextRequestWaitForAPlace() async {
        let flow = FlowControl()
        #expect(await flow.enter())
        flow.throttled(retryAfter: nil)
        #expect(flow.current.limit == 1)
        let waiting = Task { await flow.enter() }
        // The waiter is parked until a place frees; a leave hands it over.
        flow.leave()
        #expect(await waiting.value)
        // A cancelled waiter gets no place.
        let cancelled = Task { await flow.enter() }
        cancelled.cancel()
        #expect(await cancelled.value == false)
        flow.leave()
    }

    @Test func retryAfterPausesTheURLUntilThen() {
        let flow = FlowControl()
        let now = Timestamp(millisecondsSinceEpoch: 1_000)
        #expect(flow.pause(at: now) == nil)
        flow.throttled(retryAfter: now.advanced(by: .seconds(2)))
        flow.throttled(retryAfter: now.advanced(by: .seconds(1)))
        #expect(flow.pause(at: now) == now.advanced(by: .seconds(2)))
        #expect(flow.pause(at: now.advanced(by: .seconds(2))) == nil)
        #expect(flow.current.limit == nil)
    }
}
