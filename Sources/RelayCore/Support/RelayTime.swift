import Foundation

/// The relay's time: the clock it waits on and the wall-clock now it stamps events, attempts and marks with. They
/// travel together so that a test that moves one moves the other, and no part keeps a clock of its own.
public struct RelayTime<C: Clock>: Sendable where C.Duration == Duration, C: Sendable {
    public let clock: C
    /// Wall-clock now, in the store's milliseconds.
    public let now: @Sendable () -> Timestamp

    public init(clock: C, now: @escaping @Sendable () -> Timestamp) {
        self.clock = clock
        self.now = now
    }

    /// Sleeps on the clock for `duration`.
    public func sleep(for duration: Duration) async throws {
        try await clock.sleep(until: clock.now.advanced(by: duration), tolerance: nil)
    }

    /// Sleeps on the clock until the wall time `time` (or for `atMost`), the deadline fixed at once: many tasks
    /// waiting for one `Retry-After` all wake at that time.
    public func sleep(until time: Timestamp, atMost limit: Duration? = nil) async throws {
        var wait = Duration.milliseconds(max(time.millisecondsSinceEpoch - now().millisecondsSinceEpoch, 1))
        if let limit { wait = min(wait, limit) }
        try await sleep(for: wait)
    }
}

extension RelayTime where C == ContinuousClock {
    /// The machine's clocks: the monotonic one to wait on, the system one for wall time.
    public static var system: RelayTime {
        RelayTime(clock: ContinuousClock()) { Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)) }
    }
}

/// `CLOCK_MONOTONIC`, which every process on the machine shares: what systemd's `MONOTONIC_USEC` and the reload
/// answer's start time are measured on.
public enum MonotonicClock {
    /// Now, in nanoseconds.
    public static func nanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}
