/// A token bucket as a pure value: `rate` tokens a second up to `burst`. Callers reserve a token and are told how
/// long to wait for it, so waiting happens outside any lock and on whatever clock the caller uses.
public struct TokenBucket: Sendable, Equatable {
    /// The limit.
    public let limit: RateLimit
    private var tokens: Double
    private var updatedAt: Duration

    /// A full bucket at time `now` (any monotonic offset).
    public init(limit: RateLimit, now: Duration) {
        self.limit = limit
        tokens = Double(limit.burst)
        updatedAt = now
    }

    /// Takes a token, going into debt if need be, and returns how long the caller must wait before using it.
    public mutating func reserve(now: Duration) -> Duration {
        refill(now: now)
        tokens -= 1
        guard tokens < 0 else { return .zero }
        let seconds = -tokens / limit.perSecond
        return .nanoseconds(Int64((seconds * 1e9).rounded(.up)))
    }

    /// For callers that must yield to the others: takes a token only while more than `keeping` remain after it,
    /// and otherwise takes nothing and returns how long until that could be so (then ask again).
    public mutating func reserveIfSpare(now: Duration, keeping: Double) -> Duration? {
        refill(now: now)
        if tokens - 1 >= keeping {
            tokens -= 1
            return nil
        }
        let seconds = (keeping + 1 - tokens) / limit.perSecond
        return .nanoseconds(Int64((seconds * 1e9).rounded(.up)))
    }

    private mutating func refill(now: Duration) {
        guard now > updatedAt else { return }
        let elapsed = (now - updatedAt) / .seconds(1)
        tokens = min(Double(limit.burst), tokens + elapsed * limit.perSecond)
        updatedAt = now
    }
}
