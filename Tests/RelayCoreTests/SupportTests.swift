import RelayCore
import Testing

@Suite struct SupportTests {
    @Test func retryAfterReadsSecondsAndHTTPDates() {
        let now = Timestamp(iso8601: "2015-10-21T07:28:00Z")!
        #expect(RetryAfter.parse("120", now: now) == .seconds(120))
        #expect(RetryAfter.parse(" 0 ", now: now) == .zero)
        #expect(RetryAfter.parse("Wed, 21 Oct 2015 07:29:30 GMT", now: now) == .seconds(90))
        #expect(RetryAfter.parse("Wed, 21 Oct 2015 07:00:00 GMT", now: now) == .zero)
        // RFC 9110 requires the obsolete forms too: RFC 850 and asctime.
        #expect(RetryAfter.parse("Wednesday, 21-Oct-15 07:29:30 GMT", now: now) == .seconds(90))
        #expect(RetryAfter.parse("Wed Oct 21 07:29:30 2015", now: now) == .seconds(90))
        #expect(RetryAfter.parse("Wed Oct  1 07:29:30 2015", now: now) == .zero)
        #expect(RetryAfter.parse("Wednesday, 21-Oct-99 07:29:30 GMT", now: now) == .zero)
        #expect(RetryAfter.parse("Wed, 32 Oct 2015 07:29:30 GMT", now: now) == nil)
        #expect(RetryAfter.parse("soon", now: now) == nil)
        #expect(RetryAfter.parse("-5", now: now) == nil)
        #expect(RetryAfter.parse(nil, now: now) == nil)
    }

    @Test func backoffStaysWithinTheSpecBounds() {
        let backoff = Backoff(initial: .seconds(1), maximum: .seconds(3600))
        #expect(backoff.ceiling(retry: 1) == .seconds(1))
        #expect(backoff.ceiling(retry: 2) == .seconds(2))
        #expect(backoff.ceiling(retry: 5) == .seconds(16))
        #expect(backoff.ceiling(retry: 13) == .seconds(3600))
        #expect(backoff.ceiling(retry: 1000) == .seconds(3600))
        var random = SystemRandomNumberGenerator()
        for n in 1...40 {
            let delay = backoff.delay(retry: n, using: &random)
            #expect(delay >= .seconds(1) && delay <= backoff.ceiling(retry: n))
        }
    }

    @Test func tokenBucketAllowsBurstThenPaces() {
        var bucket = TokenBucket(limit: RateLimit(perSecond: 100, burst: 5), now: .zero)
        let waits = (0..<7).map { _ in bucket.reserve(now: .zero) }
        #expect(waits.prefix(5).allSatisfy { $0 == .zero })
        #expect(waits[5] == .milliseconds(10))
        #expect(waits[6] == .milliseconds(20))
        #expect(bucket.reserve(now: .seconds(1)) == .zero)
    }

    @Test func rateLimiterWaitsOnTheInjectedClock() async throws {
        let clock = TestClock(autoAdvance: true)
        let limiter = RateLimiter(limit: RateLimit(perSecond: 10, burst: 2), clock: clock)
        for _ in 0..<12 { try await limiter.acquire() }
        #expect(clock.now.offset == .seconds(1))
    }

    @Test func testClockWakesSleepersWhenAdvanced() async throws {
        let clock = TestClock()
        let sleeper = Task { try await clock.sleep(for: .seconds(5)) }
        while clock.sleeperCount == 0 { await Task.yield() }
        clock.advance(by: .seconds(4))
        #expect(clock.sleeperCount == 1)
        clock.advance(by: .seconds(1))
        try await sleeper.value
        #expect(clock.sleeperCount == 0)
    }
}

@Suite struct SystemdNotifierTests {
    @Test func watchdogIntervalComesFromTheEnvironmentForThisProcessOnly() {
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "30000000"]) == .seconds(30))
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"]) == nil)
        #expect(SystemdNotifier.watchdogInterval(environment: [:]) == nil)
        #expect(!SystemdNotifier(environment: [:]).isEnabled)
    }
}

@Suite struct ProgressMonitorTests {
    @Test func aStepRunningPastTheLimitIsStuckAndAFinishedOneIsNot() async throws {
        let monitor = ProgressMonitor()
        let start = ContinuousClock.now
        #expect(monitor.stuck(longerThan: .seconds(30), now: start).isEmpty)
        let release = StopSignal()
        let step = Task { await monitor.step("source acme") { await release.wait() } }
        // Wait for the step to begin: it registers itself before running its body.
        while monitor.stuck(longerThan: .zero, now: .now + .seconds(1)).isEmpty { await Task.yield() }
        #expect(monitor.stuck(longerThan: .seconds(30), now: .now).isEmpty)
        let stuck = monitor.stuck(longerThan: .seconds(30), now: .now + .seconds(31))
        #expect(stuck.map(\.part) == ["source acme"])
        release.fire()
        await step.value
        #expect(monitor.stuck(longerThan: .seconds(30), now: .now + .seconds(31)).isEmpty)
    }
}
