import Logging
import PostgresNIO
import RelayCore

/// A webhook's rate limit and circuit breaker, shared by every instance through PostgreSQL: a `rateLimit` holds
/// for all instances together, not for each, and a webhook that fails opens its breaker for all of them. The
/// same rules as the in-process `TokenBucket` and `CircuitBreaker`; every time is the database's.
public struct PostgresWebhookGuards: SharedWebhookGuards, PostgresPart {
    public typealias Permission = SharedPermission
    public typealias Change = SharedBreakerChange
    public typealias BreakerRule = SharedBreakerRule

    let database: RelayDatabase

    /// The guards in `database`.
    public init(_ database: RelayDatabase) {
        self.database = database
    }

    /// Takes `count` tokens from `key`'s bucket (`rate` a second, up to `burst`), going into debt if need be, and
    /// returns how long to wait before sending: a token bucket that every instance draws from.
    public func reserve(_ key: String, count: Int = 1, rate: Double, burst: Int) async throws -> Duration {
        precondition(rate > 0 && burst > 0 && count > 0)
        let rows = try await client.query(
            """
            INSERT INTO \(unescaped: schema).webhook_limit AS l (key, tokens, refreshed_at) VALUES (\(key), \(Double(burst - count)), now())
            ON CONFLICT (key) DO UPDATE SET
                tokens = least(\(Double(burst)), l.tokens + \(rate) * extract(epoch FROM now() - l.refreshed_at)::float8) - \(Double(count)),
                refreshed_at = now()
            RETURNING tokens
            """, logger: logger)
        for try await tokens in rows.decode(Double.self) {
            return tokens >= 0 ? .zero : .milliseconds(Int64((-tokens / rate * 1000).rounded(.up)))
        }
        return .zero
    }

    /// Whether a request to `key` may go now. Once the open interval has passed, exactly one caller, of any
    /// instance, gets ``Permission/probe``; if its probe takes longer than the rule's `probeTimeout`, another may.
    public func permission(_ key: String, rule: BreakerRule) async throws -> Permission {
        let probe = try await client.query(
            """
            UPDATE \(unescaped: schema).webhook_breaker
            SET state = 'probing', probe_until = now() + \(milliseconds(rule.probeTimeout)) * interval '1 millisecond'
            WHERE key = \(key) AND ((state = 'open' AND open_until <= now()) OR (state = 'probing' AND probe_until <= now()))
            RETURNING key
            """, logger: logger)
        for try await _ in probe.decode(String.self) { return .probe }
        let rows = try await client.query(
            """
            SELECT state, greatest(0, extract(epoch FROM open_until - now()) * 1000)::bigint
            FROM \(unescaped: schema).webhook_breaker WHERE key = \(key)
            """, logger: logger)
        for try await (state, openFor) in rows.decode((String, Int64?).self) {
            switch state {
            case "open": return .wait(.milliseconds(max(1, openFor ?? 0)))
            case "probing": return .wait(.milliseconds(100))
            default: return .send
            }
        }
        return .send
    }

    /// Records a request's outcome on `key`'s breaker; returns the change between open and closed, if any.
    @discardableResult
    public func record(_ key: String, success: Bool, rule: BreakerRule) async throws -> Change? {
        try await client.transaction(logger: logger) { connection in
            try await connection.query(
                """
                INSERT INTO \(unescaped: schema).webhook_breaker (key, state, failures, interval_ms)
                VALUES (\(key), 'closed', 0, \(milliseconds(rule.initialInterval))) ON CONFLICT (key) DO NOTHING
                """, logger: logger)
            let rows = try await connection.query(
                "SELECT state, failures, interval_ms FROM \(unescaped: schema).webhook_breaker WHERE key = \(key) FOR UPDATE",
                logger: logger)
            var current: (state: String, failures: Int, interval: Int64) = ("closed", 0, milliseconds(rule.initialInterval))
            for try await row in rows.decode((String, Int, Int64).self) { current = row }
            var next = current
            var change: Change?
            switch (current.state, success) {
            case ("closed", true):
                next.failures = 0
            case ("closed", false):
                next.failures += 1
                if next.failures >= rule.threshold {
                    next = ("open", next.failures, milliseconds(rule.initialInterval))
                    change = .opened(for: rule.initialInterval)
                }
            case (_, true):
                next = ("closed", 0, current.interval)
                change = .closed
            case ("probing", false):
                next = ("open", current.failures, min(current.interval * 2, milliseconds(rule.maximumInterval)))
                change = .opened(for: .milliseconds(next.interval))
            default:
                // A failure while open is a request sent before the breaker opened: no news.
                return nil
            }
            try await connection.query(
                """
                UPDATE \(unescaped: schema).webhook_breaker SET state = \(next.state), failures = \(next.failures), interval_ms = \(next.interval),
                    open_until = CASE WHEN \(change != nil && next.state == "open") THEN now() + \(next.interval) * interval '1 millisecond'
                                      WHEN \(next.state) = 'closed' THEN NULL ELSE open_until END,
                    probe_until = NULL
                WHERE key = \(key)
                """, logger: logger)
            return change
        }
    }

}
