import Synchronization

/// A clock for tests and simulations, whose time moves only when told: by ``advance(by:)``, or, in auto-advance
/// mode, by every `sleep`, which then returns at once having moved time to its deadline. Backoff, rate limits and
/// poll intervals are tested with it without real waiting.
public final class TestClock: Clock, Sendable {
    /// A point on the test clock's timeline.
    public struct Instant: InstantProtocol, Sendable {
        /// Time since the clock was made.
        public var offset: Duration

        public func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        public func duration(to other: Instant) -> Duration { other.offset - offset }
        public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private struct Sleeper {
        let deadline: Instant
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now = Instant(offset: .zero)
        var sleepers: [Int: Sleeper] = [:]
        var nextID = 0
        var sleeps: [Duration] = []
    }

    private let state = Mutex(State())
    private let autoAdvance: Bool

    /// A clock at zero; with `autoAdvance`, sleeping moves time instead of waiting.
    public init(autoAdvance: Bool = false) { self.autoAdvance = autoAdvance }

    public var now: Instant { state.withLock { $0.now } }
    public var minimumResolution: Duration { .nanoseconds(1) }

    /// Every sleep requested so far, in order: what a backoff test reads.
    public var sleeps: [Duration] { state.withLock { $0.sleeps } }

    /// How many tasks are sleeping now.
    public var sleeperCount: Int { state.withLock { $0.sleepers.count } }

    public func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        try Task.checkCancellation()
        let id = state.withLock { state -> Int? in
            state.sleeps.append(state.now.duration(to: deadline))
            if autoAdvance || deadline <= state.now {
                if deadline > state.now { state.now = deadline }
                return nil
            }
            state.nextID += 1
            return state.nextID
        }
        guard let id else {
            await Task.yield()
            return
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                // A cancel that came before this sleeper was registered found nothing to end: it is seen here, or
                // the sleep would last until the next advance (a race that woke first then waited for it for ever).
                let (resumeNow, cancelled) = state.withLock { state -> (Bool, Bool) in
                    if Task.isCancelled { return (true, true) }
                    if deadline <= state.now { return (true, false) }
                    state.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
                    return (false, false)
                }
                if cancelled {
                    continuation.resume(throwing: CancellationError())
                } else if resumeNow {
                    continuation.resume()
                }
            }
        } onCancel: {
            let sleeper = state.withLock { $0.sleepers.removeValue(forKey: id) }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward and wakes every sleeper whose deadline has come.
    public func advance(by duration: Duration) {
        let due = state.withLock { state -> [Sleeper] in
            state.now = state.now.advanced(by: duration)
            let now = state.now
            let due = state.sleepers.filter { $0.value.deadline <= now }
            for id in due.keys { state.sleepers[id] = nil }
            return due.values.sorted { $0.deadline < $1.deadline }
        }
        for sleeper in due { sleeper.continuation.resume() }
    }
}
