import Synchronization

/// A webhook URL's own word on how fast to send, shared by every subscription that posts to it. A 429 or 503 is
/// the receiver asking to slow down, not an outage (that is the ``CircuitBreaker``'s business):
/// - with `Retry-After`, every request to the URL waits until then;
/// - without it, the URL's in-flight limit halves, and grows back by one with each success (AIMD, as TCP does),
///   until it no longer limits.
public final class FlowControl: Sendable {
    private struct State {
        var pausedUntil: Timestamp?
        /// Requests allowed in flight; nil: no limit of its own (each subscription's `concurrency` rules).
        var limit: Int?
        var inFlight = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        /// Waiters handed a place, until they wake and see it.
        var granted: Set<Int> = []
        var nextWaiter = 0
    }

    /// Above this the limit is lifted altogether: no subscription sends more at once.
    public static let ceiling = 256

    private let state = Mutex(State())

    /// A URL with no pause and no limit.
    public init() {}

    /// Until when requests wait (a `Retry-After`), and the in-flight limit, for status and tests.
    public var current: (pausedUntil: Timestamp?, limit: Int?) { state.withLock { ($0.pausedUntil, $0.limit) } }

    /// Records a 429 or 503: a pause until `retryAfter` when the receiver gave one, else a halved limit. A user
    /// that counts its requests in flight itself (not through ``enter()``) passes the count as `inFlight`.
    public func throttled(retryAfter: Timestamp?, inFlight: Int? = nil) {
        state.withLock { state in
            if let retryAfter {
                state.pausedUntil = max(state.pausedUntil ?? retryAfter, retryAfter)
            } else {
                state.limit = max(1, min(state.limit ?? Int.max, max(inFlight ?? state.inFlight, 1)) / 2)
            }
        }
    }

    /// Records a response that was not a 429 or 503: the limit, if any, grows by one.
    public func answered() {
        let woken = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let limit = state.limit else { return nil }
            state.limit = limit + 1 >= Self.ceiling ? nil : limit + 1
            return Self.nextWaiter(&state)
        }
        woken?.resume()
    }

    /// The time to wait for before sending, if the URL is paused at `now`.
    public func pause(at now: Timestamp) -> Timestamp? {
        state.withLock { state in
            guard let until = state.pausedUntil, until > now else { return nil }
            return until
        }
    }

    /// Takes an in-flight place if one is free now, without waiting; true when taken.
    public func tryEnter() -> Bool {
        state.withLock { state in
            guard state.limit.map({ state.inFlight < $0 }) ?? true, state.waiters.isEmpty else { return false }
            state.inFlight += 1
            return true
        }
    }

    /// Takes an in-flight place, waiting for one while the limit is reached. Every `enter` is followed by one
    /// ``leave()``. Returns early, without a place, when the task is cancelled.
    public func enter() async -> Bool {
        let id = state.withLock { state -> Int? in
            if state.limit.map({ state.inFlight < $0 }) ?? true {
                state.inFlight += 1
                return nil
            }
            state.nextWaiter += 1
            return state.nextWaiter
        }
        guard let id else { return true }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if Task.isCancelled { return true }
                    // A place may have freed between the first look and now.
                    if state.limit.map({ state.inFlight < $0 }) ?? true {
                        state.inFlight += 1
                        state.granted.insert(id)
                        return true
                    }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
        // Woken with a place taken for it, or cancelled without one.
        return state.withLock { $0.granted.remove(id) != nil }
    }

    /// Gives back an in-flight place.
    public func leave() {
        let woken = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.inFlight -= 1
            return Self.nextWaiter(&state)
        }
        woken?.resume()
    }

    /// Hands a free place to the longest waiter, if there is both.
    private static func nextWaiter(_ state: inout State) -> CheckedContinuation<Void, Never>? {
        guard state.limit.map({ state.inFlight < $0 }) ?? true, let first = state.waiters.keys.min() else { return nil }
        state.inFlight += 1
        state.granted.insert(first)
        return state.waiters.removeValue(forKey: first)
    }
}
