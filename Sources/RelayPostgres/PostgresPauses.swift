import Logging
import PostgresNIO
import RelayCore

/// Subscriptions paused after `pauseAfter` dead letters in a row, for every instance sharing the schema: the count
/// is one row per subscription, and a probe is taken by one instance at a time, by the database's clock.
public struct PostgresPauses: SharedPauses, PostgresPart {
    let database: RelayDatabase

    /// The pauses in `database`.
    public init(_ database: RelayDatabase) {
        self.database = database
    }

    public func pause(of subscription: String) async throws -> SubscriptionPause? {
        let rows = try await client.query(
            "SELECT reason, paused_at, webhook FROM \(unescaped: schema).subscription_pause WHERE subscription = \(subscription) AND reason IS NOT NULL",
            logger: logger)
        for try await (reason, since, webhook) in rows.decode((String, Int64, String).self) {
            return SubscriptionPause(reason: reason, since: Timestamp(millisecondsSinceEpoch: since), webhook: webhook)
        }
        return nil
    }

    public func countDeadLetters(
        _ subscription: String, events: Int, pauseAfter: Int, pause: @escaping @Sendable (_ count: Int) -> SubscriptionPause, probeEvery: Duration
    ) async throws -> (pause: SubscriptionPause, madeNow: Bool)? {
        try await client.transaction(logger: logger) { connection in
            let rows = try await connection.query(
                """
                INSERT INTO \(unescaped: schema).subscription_pause AS p (subscription, dead_in_a_row) VALUES (\(subscription), \(events))
                ON CONFLICT (subscription) DO UPDATE SET dead_in_a_row = p.dead_in_a_row + excluded.dead_in_a_row
                RETURNING dead_in_a_row, reason, paused_at, webhook
                """, logger: logger)
            var count = 0
            var existing: SubscriptionPause?
            for try await (counted, reason, since, webhook) in rows.decode((Int, String?, Int64?, String?).self) {
                count = counted
                if let reason, let since, let webhook {
                    existing = SubscriptionPause(reason: reason, since: Timestamp(millisecondsSinceEpoch: since), webhook: webhook)
                }
            }
            if let existing { return (existing, false) }
            // The row is locked until the commit: of instances counting at once, only the one that reaches
            // `pauseAfter` first pauses; the others see its pause.
            guard pauseAfter > 0, count >= pauseAfter else { return nil }
            let made = pause(count)
            try await connection.query(
                """
                UPDATE \(unescaped: schema).subscription_pause
                SET reason = \(made.reason), paused_at = \(made.since.millisecondsSinceEpoch), webhook = \(made.webhook),
                    probe_at = now() + \(probeEvery / .milliseconds(1)) * interval '1 millisecond'
                WHERE subscription = \(subscription)
                """, logger: logger)
            return (made, true)
        }
    }

    @discardableResult
    public func delivered(_ subscription: String) async throws -> Bool {
        try await clear(subscription, onlyPaused: false)
    }

    public func takeProbe(_ subscription: String, probeEvery: Duration) async throws -> Bool {
        let rows = try await client.query(
            """
            UPDATE \(unescaped: schema).subscription_pause SET probe_at = now() + \(probeEvery / .milliseconds(1)) * interval '1 millisecond'
            WHERE subscription = \(subscription) AND reason IS NOT NULL AND probe_at <= now()
            RETURNING subscription
            """, logger: logger)
        return try await count(rows) > 0
    }

    @discardableResult
    public func resume(_ subscription: String) async throws -> Bool {
        try await clear(subscription, onlyPaused: true)
    }

    /// Zeroes the count and lifts the pause (only a pause when `onlyPaused`); whether a pause was lifted.
    private func clear(_ subscription: String, onlyPaused: Bool) async throws -> Bool {
        try await client.transaction(logger: logger) { connection in
            let rows = try await connection.query(
                """
                SELECT reason IS NOT NULL, dead_in_a_row FROM \(unescaped: schema).subscription_pause WHERE subscription = \(subscription) FOR UPDATE
                """, logger: logger)
            var before: (paused: Bool, count: Int) = (false, 0)
            for try await row in rows.decode((Bool, Int).self) { before = row }
            guard before.paused || (!onlyPaused && before.count > 0) else { return false }
            try await connection.query(
                """
                UPDATE \(unescaped: schema).subscription_pause SET dead_in_a_row = 0, reason = NULL, paused_at = NULL, webhook = NULL, probe_at = NULL
                WHERE subscription = \(subscription)
                """, logger: logger)
            return before.paused
        }
    }
}
