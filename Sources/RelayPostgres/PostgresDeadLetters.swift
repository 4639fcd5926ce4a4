import NIOCore
import PostgresNIO
import RelayCore

/// Dead letters in PostgreSQL, for `dead-letters` run from any instance: listed and shown with the same filters
/// as in SQLite, replayed into the shared queue, purged.
public struct PostgresDeadLetters: DeadLetterStore, PostgresPart {
    let database: RelayDatabase

    public init(_ database: RelayDatabase) {
        self.database = database
    }

    public func deadLetters(_ filter: DeadLetterFilter) async throws -> [DeadLetter] {
        var (clause, bindings) = try Self.whereClause(filter)
        let limit = Self.limitClause(filter, &bindings)
        return try await letters(
            PostgresQuery(
                unsafeSQL: "SELECT \(Self.columns), ''::bytea FROM \(schema).dead_letter \(clause) ORDER BY dead_at, id\(limit)",
                binds: bindings))
    }

    public func deadLetter(id: Int64) async throws -> DeadLetter? {
        try await letters("SELECT \(unescaped: Self.columns), payload FROM \(unescaped: schema).dead_letter WHERE id = \(id)").first
    }

    public func countDeadLetters(_ filter: DeadLetterFilter) async throws -> Int {
        var (clause, bindings) = try Self.whereClause(filter)
        let limit = Self.limitClause(filter, &bindings)
        let rows = try await client.query(
            PostgresQuery(unsafeSQL: "SELECT count(*) FROM (SELECT 1 FROM \(schema).dead_letter \(clause)\(limit)) AS selected", binds: bindings),
            logger: logger)
        var total = 0
        for try await value in rows.decode(Int.self) { total = value }
        return total
    }

    public func replayDeadLetters(_ filter: DeadLetterFilter, now: Timestamp, chunk: Int? = nil) async throws -> (taken: Int, queued: Int) {
        let filter = filter.chunked(chunk)
        var (clause, bindings) = try Self.whereClause(filter)
        let limit = Self.limitClause(filter, &bindings)
        return try await client.transaction(logger: logger) { connection in
            let rows = try await connection.query(
                PostgresQuery(
                    unsafeSQL: """
                        SELECT id, subscription, source, event_id, event_time, action, time_value, payload FROM \(schema).dead_letter
                        \(clause) ORDER BY dead_at, id\(limit) FOR UPDATE
                        """, binds: bindings), logger: logger)
            var letters: [(id: Int64, subscription: String, source: String, eventID: String, time: Int64, action: String, timeValue: String, payload: ByteBuffer)] = []
            for try await letter in rows.decode((Int64, String, String, String, Int64, String, String, ByteBuffer).self) { letters.append(letter) }
            var queued = 0
            let deliveries = PostgresDeliveries(database)
            for letter in letters {
                let event = PostgresDeliveries.StoredEvent(
                    id: letter.eventID, time: letter.time, action: letter.action, timeValue: letter.timeValue, payload: letter.payload)
                if try await deliveries.requeue(event, source: letter.source, for: letter.subscription, now: now, on: connection) { queued += 1 }
            }
            try await connection.query("DELETE FROM \(unescaped: schema).dead_letter WHERE id = ANY(\(letters.map(\.id)))", logger: logger)
            return (letters.count, queued)
        }
    }

    @discardableResult
    public func purgeDeadLetters(_ filter: DeadLetterFilter, chunk: Int? = nil) async throws -> Int {
        let filter = filter.chunked(chunk)
        var (clause, bindings) = try Self.whereClause(filter)
        let limit = Self.limitClause(filter, &bindings)
        let rows = try await client.query(
            PostgresQuery(
                unsafeSQL: """
                    DELETE FROM \(schema).dead_letter WHERE id IN (SELECT id FROM \(schema).dead_letter \(clause) ORDER BY dead_at, id\(limit))
                    RETURNING id
                    """, binds: bindings), logger: logger)
        return try await count(rows)
    }

    public func hasRows(of subscription: String) async throws -> Bool {
        let rows = try await client.query(
            """
            SELECT EXISTS (SELECT 1 FROM \(unescaped: schema).delivery WHERE subscription = \(subscription))
                OR EXISTS (SELECT 1 FROM \(unescaped: schema).dead_letter WHERE subscription = \(subscription))
            """, logger: logger)
        var found = false
        for try await exists in rows.decode(Bool.self) { found = exists }
        return found
    }

    /// Deletes the dead letters that died before `before` (the retention); how many.
    @discardableResult
    public func pruneDeadLetters(before: Timestamp) async throws -> Int {
        try await count(
            try await client.query(
                "DELETE FROM \(unescaped: schema).dead_letter WHERE dead_at < \(before.millisecondsSinceEpoch) RETURNING id", logger: logger))
    }

    private static let columns =
        "id, subscription, event_id, event_time, reason, last_status, attempts, first_attempt_at, last_attempt_at, dead_at, response"

    private func letters(_ query: PostgresQuery) async throws -> [DeadLetter] {
        var letters: [DeadLetter] = []
        let rows = try await client.query(query, logger: logger)
        for try await (id, subscription, eventID, time, reason, status, attempts, first, last, deadAt, response, payload)
            in rows.decode((Int64, String, String, Int64, String, Int?, Int, Int64, Int64, Int64, ByteBuffer, ByteBuffer).self)
        {
            letters.append(
                DeadLetter(
                    id: id, subscription: subscription, eventID: eventID, eventTime: Timestamp(millisecondsSinceEpoch: time), reason: reason,
                    status: status, attempts: attempts, firstAttemptAt: Timestamp(millisecondsSinceEpoch: first),
                    lastAttemptAt: Timestamp(millisecondsSinceEpoch: last), deadAt: Timestamp(millisecondsSinceEpoch: deadAt),
                    responseSnippet: Array(buffer: response), payload: Array(buffer: payload)))
        }
        return letters
    }

    /// `WHERE ...` for `filter`, with its values bound: the conditions ``DeadLetterFilter`` names, as SQLite's store
    /// applies them.
    private static func whereClause(_ filter: DeadLetterFilter) throws -> (String, PostgresBindings) {
        var conditions: [String] = []
        var bindings = PostgresBindings()
        func bind(_ value: some PostgresThrowingDynamicTypeEncodable) throws -> String {
            try bindings.append(value)
            return "$\(bindings.count)"
        }
        if let subscription = filter.subscription { conditions.append("subscription = \(try bind(subscription))") }
        if let subscriptions = filter.subscriptions { conditions.append("subscription = ANY(\(try bind(subscriptions)))") }
        // left(), not LIKE: a reason may hold % or _. PostgreSQL counts code points, as unicodeScalars does.
        if let prefix = filter.reasonPrefix {
            conditions.append("left(reason, \(try bind(Int32(prefix.unicodeScalars.count)))) = \(try bind(prefix))")
        }
        if let status = filter.status { conditions.append("last_status = \(try bind(status))") }
        if let since = filter.since { conditions.append("dead_at >= \(try bind(since.millisecondsSinceEpoch))") }
        if let until = filter.until { conditions.append("dead_at < \(try bind(until.millisecondsSinceEpoch))") }
        return (conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND "), bindings)
    }

    private static func limitClause(_ filter: DeadLetterFilter, _ bindings: inout PostgresBindings) -> String {
        guard let limit = filter.limit else { return "" }
        bindings.append(limit)
        return " LIMIT $\(bindings.count)"
    }
}
