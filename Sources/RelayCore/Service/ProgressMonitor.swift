import Synchronization

/// What the systemd watchdog asks before each ping: is any part of the relay stuck in a step (a store read or
/// write that never returns)? Waiting by choice (a poll interval, a backoff, a `Retry-After`, a webhook's answer,
/// which curl's timeouts bound) is not a step. A step running longer than the watchdog interval stops the pings,
/// so systemd restarts a relay that is alive but no longer moving, rather than one that is only idle.
public final class ProgressMonitor: Sendable {
    private struct Running {
        var part: String
        var since: ContinuousClock.Instant
    }

    private struct State {
        var next = 0
        var running: [Int: Running] = [:]
    }

    private let state = Mutex(State())

    /// A monitor with nothing running.
    public init() {}

    /// Runs `body` as a step of `part`.
    public func step<T>(_ part: String, _ body: () async throws -> T) async rethrows -> T {
        let id = state.withLock { state -> Int in
            state.next += 1
            state.running[state.next] = Running(part: part, since: .now)
            return state.next
        }
        defer { _ = state.withLock { $0.running.removeValue(forKey: id) } }
        return try await body()
    }

    /// The parts with a step running for longer than `limit`, and for how long the oldest has run.
    public func stuck(longerThan limit: Duration, now: ContinuousClock.Instant = .now) -> [(part: String, running: Duration)] {
        state.withLock { state in
            state.running.values.filter { $0.since.duration(to: now) > limit }
                .map { ($0.part, $0.since.duration(to: now)) }
                .sorted { $0.running > $1.running }
        }
    }
}

extension Optional where Wrapped == ProgressMonitor {
    /// Runs `body` as a step when there is a monitor, else just runs it.
    func step<T>(_ part: String, _ body: () async throws -> T) async rethrows -> T {
        guard let monitor = self else { return try await body() }
        return try await monitor.step(part, body)
    }
}
