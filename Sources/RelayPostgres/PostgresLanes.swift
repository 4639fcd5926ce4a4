import Logging
import PostgresNIO
import RelayCore

/// Within one page's transaction on PostgreSQL: which subscriptions the shared poll feeds, and whose queues are
/// full. The rules are SQLite's (`SubscriptionLanes`); a queue's depth is counted once per page, up to its limit.
struct PostgresLanes {
    private let connection: PostgresConnection
    private let schema: String
    private let logger: Logger
    private let source: String
    private let limits: [String: Int]
    /// Subscriptions behind, by name, with their positions.
    private var behind: [String: Int64] = [:]
    private var depths: [String: Int] = [:]
    private(set) var filled: [String] = []
    /// The live cursor before this page and where this page moves it.
    private let liveBefore: Int64
    private let liveAfter: Int64

    init(
        _ connection: PostgresConnection, schema: String, logger: Logger, source: String, limits: [String: Int], liveAfter: Timestamp?
    ) async throws {
        (self.connection, self.schema, self.logger, self.source, self.limits) = (connection, schema, logger, source, limits)
        var before: Int64 = 0
        for try await position in try await connection.query(
            "SELECT position FROM \(unescaped: schema).cursor WHERE source = \(source)", logger: logger
        ).decode(Int64.self) { before = position }
        liveBefore = before
        self.liveAfter = max(before, liveAfter?.millisecondsSinceEpoch ?? before)
        for try await (subscription, position) in try await connection.query(
            "SELECT subscription, position FROM \(unescaped: schema).subscription_cursor WHERE source = \(source) AND state = 'behind'",
            logger: logger
        ).decode((String, Int64?).self) { behind[subscription] = position ?? .max }
    }

    /// Whether the shared poll queues this event for `subscription`: current, with room, or behind with the event
    /// before its position (a late one its own read has passed). A current one whose queue is full falls behind
    /// here, at a position that neither re-reads what it was given nor skips what it was not (as in SQLite).
    mutating func admits(_ subscription: String, at time: Timestamp, now: Timestamp) async throws -> Bool {
        if let position = behind[subscription] { return time.millisecondsSinceEpoch < position }
        guard let limit = limits[subscription] else { return true }
        if depths[subscription] == nil {
            depths[subscription] = try await PostgresDeliveries.depth(of: subscription, upTo: limit, schema: schema, on: connection, logger: logger)
        }
        guard depths[subscription]! >= limit else { return true }
        // Joining subscriptions are not limited: their tail is short, and falling behind mid-join would lose it.
        var state: String?
        for try await found in try await connection.query(
            "SELECT state FROM \(unescaped: schema).subscription_cursor WHERE subscription = \(subscription)", logger: logger
        ).decode(String.self) { state = found }
        if state == "joining" { return true }
        let t = time.millisecondsSinceEpoch
        let position = SubscriptionCursor.fallBehindPosition(at: t, liveBefore: liveBefore, liveAfter: liveAfter)
        try await connection.query(
            """
            INSERT INTO \(unescaped: schema).subscription_cursor (subscription, source, state, position, reason, since)
            VALUES (\(subscription), \(source), 'behind', \(position), \(SubscriptionCursor.Reason.queueFull.rawValue), \(now.millisecondsSinceEpoch))
            ON CONFLICT (subscription) DO UPDATE SET state = 'behind', position = excluded.position, reason = excluded.reason,
                since = excluded.since
            """, logger: logger)
        behind[subscription] = position
        filled.append(subscription)
        return t < position
    }

    mutating func count(_ subscription: String, _ queued: Int) {
        if depths[subscription] != nil { depths[subscription]! += queued }
    }
}
