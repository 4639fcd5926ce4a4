import Synchronization

/// Stops sending to a webhook URL after a run of failures and lets one probe through per interval, so a dead
/// endpoint costs one request per interval rather than `concurrency` per retry. Shared by every subscription
/// that posts to the same URL.
public final class CircuitBreaker: Sendable {
    /// What a sender may do now.
    public enum Permission: Sendable, Equatable {
        /// Send.
        case send
        /// Send this one request as the probe; report its outcome.
        case probe
        /// Do not send before this time.
        case waitUntil(Timestamp)
    }

    /// The breaker's state, for logs and metrics.
    public enum State: Sendable, Equatable {
        case closed(failures: Int)
        case open(until: Timestamp, interval: Duration)
        case probing(interval: Duration)
    }

    /// Consecutive failures that open the breaker.
    public let threshold: Int
    /// The first open interval; it doubles on each failed probe up to ``maximumInterval``.
    public let initialInterval: Duration
    /// The longest open interval.
    public let maximumInterval: Duration
    private let state = Mutex(State.closed(failures: 0))

    /// The rule's defaults, for this breaker and the one instances share on PostgreSQL (``SharedBreakerRule``).
    public static let defaultThreshold = 5
    public static let defaultInitialInterval: Duration = .seconds(5)
    public static let defaultMaximumInterval: Duration = .seconds(300)

    /// A closed breaker.
    public init(
        threshold: Int = defaultThreshold, initialInterval: Duration = defaultInitialInterval, maximumInterval: Duration = defaultMaximumInterval
    ) {
        self.threshold = threshold
        self.initialInterval = initialInterval
        self.maximumInterval = maximumInterval
    }

    /// The current state.
    public var current: State { state.withLock { $0 } }

    /// Whether a request may go now.
    public func permission(now: Timestamp) -> Permission {
        state.withLock { state in
            switch state {
            case .closed: return .send
            case .probing: return .waitUntil(now.advanced(by: .milliseconds(100)))
            case .open(let until, let interval):
                guard now >= until else { return .waitUntil(until) }
                state = .probing(interval: interval)
                return .probe
            }
        }
    }

    /// Records an outcome; returns the new state when it changed between open and closed, for logging.
    @discardableResult
    public func record(success: Bool, now: Timestamp) -> State? {
        state.withLock { state -> State? in
            switch (state, success) {
            case (.closed, true):
                state = .closed(failures: 0)
                return nil
            case (.closed(let failures), false):
                guard failures + 1 >= threshold else {
                    state = .closed(failures: failures + 1)
                    return nil
                }
                state = .open(until: now.advanced(by: initialInterval), interval: initialInterval)
                return state
            case (.probing, true), (.open, true):
                state = .closed(failures: 0)
                return state
            case (.open, false):
                // A request sent before the breaker opened has failed too: no new information.
                return nil
            case (.probing(let interval), false):
                let next = min(interval * 2, maximumInterval)
                state = .open(until: now.advanced(by: next), interval: next)
                return state
            }
        }
    }
}
