import Logging
import NIOCore
import PostgresNIO
import RelayCore

/// The deliveries queue in PostgreSQL, shared by every instance. An instance claims due rows for its free slots
/// only, and a claim hides them for a visibility timeout: an instance that dies or stalls past it loses them to
/// whoever claims next, without a rescuer. Each claim has a token, and an outcome applies only while its rows
/// still carry that token, so a late outcome from a former claimant changes nothing (it is counted as stale).
/// Every time that decides visibility is the database's `now()`.
public struct PostgresDeliveries: ClaimQueue, PostgresPart {
    let database: RelayDatabase

    /// The queue in `database`.
    public init(_ database: RelayDatabase) {
        self.database = database
    }

    /// Stores the events of `source` that some subscription wants, and queues each for its subscriptions, on
    /// `connection` (inside the poller's fenced page transaction); an event already stored is left as it is.
    /// Row ids follow the order given, which breaks ties of one millisecond in strict order. Returns the events
    /// stored and the deliveries queued.
    @discardableResult
    public func queue(
        _ routed: [RoutedEvent], source: String, now: Timestamp, on connection: PostgresConnection
    ) async throws -> (stored: Int, queued: Int) {
        let wanted = routed.filter { !$0.subscriptions.isEmpty }
        guard !wanted.isEmpty else { return (0, 0) }
        let events = wanted.map(\.event)
        let rows = try await connection.query(
            """
            INSERT INTO \(unescaped: schema).event (source, event_id, event_time, action, time_value, payload, queued_at, pending)
            SELECT \(source), e.id, e.time, e.action, e.time_value, e.payload, \(now.millisecondsSinceEpoch), e.pending
            FROM unnest(\(events.map(\.id)), \(events.map(\.time.millisecondsSinceEpoch)), \(events.map(\.action)),
                        \(events.map(\.timeValue.description)), \(events.map { ByteBuffer(bytes: $0.raw) }),
                        \(wanted.map { $0.subscriptions.count }))
                WITH ORDINALITY AS e(id, time, action, time_value, payload, pending, position)
            ORDER BY e.position
            ON CONFLICT (source, event_time, event_id) DO NOTHING
            RETURNING id, event_id, event_time
            """, logger: logger)
        var stored: [EventKey: Int64] = [:]
        for try await (row, id, time) in rows.decode((Int64, String, Int64).self) { stored[EventKey(id: id, time: time)] = row }
        var subscriptions: [String] = []
        var rowIDs: [Int64] = []
        var times: [Int64] = []
        for entry in wanted {
            guard let row = stored[EventKey(id: entry.event.id, time: entry.event.time.millisecondsSinceEpoch)] else { continue }
            for subscription in entry.subscriptions {
                subscriptions.append(subscription)
                rowIDs.append(row)
                times.append(entry.event.time.millisecondsSinceEpoch)
            }
        }
        guard !rowIDs.isEmpty else { return (0, 0) }
        try await connection.query(
            """
            INSERT INTO \(unescaped: schema).delivery (subscription, event, event_time, unit)
            SELECT d.subscription, d.event, d.time, d.event FROM unnest(\(subscriptions), \(rowIDs), \(times)) AS d(subscription, event, time)
            """, logger: logger)
        return (stored.count, rowIDs.count)
    }

    /// Stores `events` and queues each for every one of `subscriptions`, in a transaction of its own; returns the
    /// events stored.
    @discardableResult
    public func queue(_ events: [Event], source: String, for subscriptions: [String], now: Timestamp) async throws -> Int {
        try await client.transaction(logger: logger) { connection in
            try await queue(events.map { RoutedEvent(event: $0, subscriptions: subscriptions) }, source: source, now: now, on: connection).stored
        }
    }

    /// An event as stored: what a replay queues again.
    public struct StoredEvent: Sendable {
        public let id: String
        public let time: Int64
        public let action: String
        public let timeValue: String
        public let payload: ByteBuffer

        public init(id: String, time: Int64, action: String, timeValue: String, payload: ByteBuffer) {
            (self.id, self.time, self.action, self.timeValue, self.payload) = (id, time, action, timeValue, payload)
        }

        public init(_ event: Event) {
            self.init(
                id: event.id, time: event.time.millisecondsSinceEpoch, action: event.action, timeValue: event.timeValue.description,
                payload: ByteBuffer(bytes: event.raw))
        }
    }

    /// Queues `event` of `source` for `subscription` again (a replay), due at once with fresh attempts, on
    /// `connection`: the event's row is reused while another delivery still holds it, and an event still queued
    /// for the subscription is not queued twice. Whether it queued a delivery.
    public func requeue(_ event: StoredEvent, source: String, for subscription: String, now: Timestamp, on connection: PostgresConnection) async throws -> Bool {
        let stored = try await connection.query(
            """
            INSERT INTO \(unescaped: schema).event AS e (source, event_id, event_time, action, time_value, payload, queued_at, pending)
            VALUES (\(source), \(event.id), \(event.time), \(event.action), \(event.timeValue), \(event.payload), \(now.millisecondsSinceEpoch), 0)
            ON CONFLICT (source, event_time, event_id) DO UPDATE SET queued_at = greatest(e.queued_at, excluded.queued_at)
            RETURNING id, pending
            """, logger: logger)
        var row: (event: Int64, pending: Int)?
        for try await stored in stored.decode((Int64, Int).self) { row = stored }
        guard let (id, pending) = row else { return false }
        let delivery = try await connection.query(
            """
            INSERT INTO \(unescaped: schema).delivery (subscription, event, event_time, unit)
            VALUES (\(subscription), \(id), \(event.time), \(id)) ON CONFLICT DO NOTHING RETURNING event
            """, logger: logger)
        if try await count(delivery) > 0 {
            try await connection.query("UPDATE \(unescaped: schema).event SET pending = pending + 1 WHERE id = \(id)", logger: logger)
            return true
        }
        if pending == 0 {
            // Stored just now for a delivery that was queued already: no row without a delivery stays.
            try await connection.query("DELETE FROM \(unescaped: schema).event WHERE id = \(id)", logger: logger)
        }
        return false
    }

    /// Queues `events` of `source` for `subscription` (those still queued for it are skipped) until its queue
    /// holds `limit`; returns what it did and how far the reader may move: `through`, or the time of the first
    /// event that found the queue full (`filled` names the subscription then). As SQLite's store does.
    func queue(
        _ events: [Event], of source: String, for subscription: String, through: Timestamp, upTo limit: Int, now: Timestamp,
        on connection: PostgresConnection
    ) async throws -> (EnqueueResult, position: Timestamp) {
        var result = EnqueueResult()
        var depth = try await Self.depth(of: subscription, upTo: limit, schema: schema, on: connection, logger: logger)
        for event in events {
            if depth >= limit {
                result.filled = [subscription]
                return (result, event.time)
            }
            let queued = try await requeue(StoredEvent(event), source: source, for: subscription, now: now, on: connection) ? 1 : 0
            depth += queued
            result.queued += queued
            result.newEvents += queued
            result.duplicates += 1 - queued
        }
        return (result, through)
    }

    /// How many deliveries `subscription` has queued, counted up to `limit` only: a full queue of a million rows is
    /// not counted to the end on every page.
    static func depth(of subscription: String, upTo limit: Int, schema: String, on connection: PostgresConnection, logger: Logger) async throws -> Int {
        var depth = 0
        for try await counted in try await connection.query(
            "SELECT count(*)::int8 FROM (SELECT 1 FROM \(unescaped: schema).delivery WHERE subscription = \(subscription) LIMIT \(limit)) AS queued",
            logger: logger
        ).decode(Int64.self) { depth = Int(counted) }
        return depth
    }

    private struct EventKey: Hashable {
        let id: String
        let time: Int64
    }

    /// Claims up to `requests` requests' worth of due rows of `subscription` for `instance`, hidden from every other
    /// claim for `visibility`: existing batches whole, loose rows composed into new batches of `batchSize` (their
    /// members and id fixed from here on). Rows another claim is taking at this moment are skipped, not waited for.
    public func claim(
        _ subscription: String, requests: Int, batchSize: Int, by instance: String, visibility: Duration
    ) async throws -> [ClaimedRequest] {
        guard requests > 0 else { return [] }
        return try await client.transaction(logger: logger) { connection in
            let due = try await connection.query(
                """
                SELECT event, event_time, batch_id IS NOT NULL FROM \(unescaped: schema).delivery
                WHERE subscription = \(subscription) AND event = unit AND visible_at <= now()
                ORDER BY visible_at, event_time, event
                LIMIT \(requests * batchSize)
                FOR NO KEY UPDATE SKIP LOCKED
                """, logger: logger)
            var rows: [(event: Int64, time: Int64, batched: Bool)] = []
            for try await row in due.decode((Int64, Int64, Bool).self) { rows.append(row) }
            var units: [Int64] = []
            var composing: [(event: Int64, time: Int64)] = []
            var composed: [[(event: Int64, time: Int64)]] = []
            for (event, time, batched) in rows {
                guard units.count + composed.count < requests else { break }
                if batched || batchSize == 1 {
                    units.append(event)
                    continue
                }
                composing.append((event, time))
                if composing.count == batchSize {
                    composed.append(composing)
                    composing = []
                }
            }
            if !composing.isEmpty, units.count + composed.count < requests { composed.append(composing) }
            for members in composed {
                units.append(try await compose(members, subscription: subscription, on: connection))
            }
            guard !units.isEmpty else { return [] }
            // A token per request, so that each outcome answers for its own rows only.
            let claimedRows = try await connection.query(
                """
                UPDATE \(unescaped: schema).delivery d
                SET claim_token = t.token, claimed_by = \(instance), visible_at = now() + \(milliseconds(visibility)) * interval '1 millisecond'
                FROM (SELECT unit, nextval('\(unescaped: schema).claim_token') AS token FROM unnest(\(units)) AS unit) t
                WHERE d.subscription = \(subscription) AND d.unit = t.unit
                RETURNING t.token
                """, logger: logger)
            var tokens: Set<Int64> = []
            for try await token in claimedRows.decode(Int64.self) { tokens.insert(token) }
            return try await claimed(subscription, tokens: Array(tokens), on: connection)
        }
    }

    /// Claims the head of `subscription`'s line for strict order: at most one request of the subscription is out
    /// across every instance (the gate row, claimed with the same token and timeout), and only the head, when it
    /// is due. A loose head is composed into a batch with the loose, due rows right behind it.
    public func claimHead(
        _ subscription: String, batchSize: Int, by instance: String, visibility: Duration
    ) async throws -> ClaimedRequest? {
        try await client.transaction(logger: logger) { connection in
            let token = try await nextToken(connection)
            let gate = try await connection.query(
                """
                INSERT INTO \(unescaped: schema).strict_gate AS g (subscription, claim_token, claim_expires_at)
                VALUES (\(subscription), \(token), now() + \(milliseconds(visibility)) * interval '1 millisecond')
                ON CONFLICT (subscription) DO UPDATE SET claim_token = excluded.claim_token, claim_expires_at = excluded.claim_expires_at
                    WHERE g.claim_token IS NULL OR g.claim_expires_at <= now()
                RETURNING claim_token
                """, logger: logger)
            guard try await count(gate) > 0 else { return nil }
            let line = try await connection.query(
                """
                SELECT event, event_time, batch_id IS NOT NULL, unit, visible_at <= now() FROM \(unescaped: schema).delivery
                WHERE subscription = \(subscription)
                ORDER BY event_time, event
                LIMIT \(batchSize)
                FOR NO KEY UPDATE
                """, logger: logger)
            var rows: [(event: Int64, time: Int64, batched: Bool, unit: Int64, due: Bool)] = []
            for try await row in line.decode((Int64, Int64, Bool, Int64, Bool).self) { rows.append(row) }
            guard let head = rows.first, head.due else {
                // Nothing due at the head: the gate opens again for the next look.
                try await releaseGate(subscription, token: token, on: connection)
                return nil
            }
            let unit: Int64
            if head.batched || batchSize == 1 {
                unit = head.unit
            } else {
                let members = rows.prefix { !$0.batched && $0.due }.map { (event: $0.event, time: $0.time) }
                unit = try await compose(Array(members), subscription: subscription, on: connection)
            }
            try await connection.query(
                """
                UPDATE \(unescaped: schema).delivery
                SET claim_token = \(token), claimed_by = \(instance), visible_at = now() + \(milliseconds(visibility)) * interval '1 millisecond'
                WHERE subscription = \(subscription) AND unit = \(unit)
                """, logger: logger)
            return try await claimed(subscription, tokens: [token], on: connection).first
        }
    }

    /// Applies outcomes in one transaction: delivered rows leave the queue (an event's row with its last
    /// delivery), retried ones are hidden until their retry time, given-up ones move to the dead letters. An
    /// outcome whose rows no longer carry its token (its claim timed out, and another instance claimed them) is
    /// not applied. Returns how many outcomes were applied and how many were stale.
    public func record(_ outcomes: [ClaimedOutcome], now: Timestamp) async throws -> (applied: Int, stale: Int) {
        guard !outcomes.isEmpty else { return (0, 0) }
        return try await client.transaction(logger: logger) { connection in
            // Locks in one order for every transaction that takes them, so that instances never wait on each other
            // in a circle: strict gates (a strict claim takes its gate before its rows), then event rows by id (an
            // event delivered to several subscriptions is released by each), then each request's rows, its first
            // row before the others (a claim locks that one first).
            for gate in Set(outcomes.map { SubscriptionToken($0.outcome.deliveries[0].subscription, $0.token) }).sorted() {
                try await releaseGate(gate.subscription, token: gate.token, on: connection)
            }
            let events = Set(outcomes.flatMap { $0.outcome.deliveries.map(\.id) }).sorted()
            try await connection.query(
                "SELECT id FROM \(unescaped: schema).event WHERE id = ANY(\(events)) ORDER BY id FOR NO KEY UPDATE", logger: logger)
            var applied = 0
            for claimed in outcomes {
                let outcome = claimed.outcome
                let subscription = outcome.deliveries[0].subscription
                let at = outcome.attemptedAt.millisecondsSinceEpoch
                // Held from here to the commit: a claim cannot take them over between the steps below. None left
                // under this token means the claim timed out and another instance has them: a stale outcome.
                let held = try await connection.query(
                    """
                    SELECT event FROM \(unescaped: schema).delivery WHERE subscription = \(subscription) AND claim_token = \(claimed.token)
                    ORDER BY event = unit DESC, event FOR NO KEY UPDATE
                    """, logger: logger)
                guard try await count(held) > 0 else { continue }
                let taken: Int
                switch outcome.decision {
                case .delivered:
                    taken = try await remove(subscription, token: claimed.token, on: connection)
                case .retry(let next):
                    let rows = try await connection.query(
                        """
                        UPDATE \(unescaped: schema).delivery
                        SET attempts = attempts + 1, first_attempt_at = coalesce(first_attempt_at, \(at)), last_attempt_at = \(at),
                            last_status = \(outcome.status), last_error = \(outcome.error),
                            visible_at = now() + \(max(0, next.millisecondsSinceEpoch - now.millisecondsSinceEpoch)) * interval '1 millisecond',
                            claim_token = NULL, claimed_by = NULL
                        WHERE subscription = \(subscription) AND claim_token = \(claimed.token)
                        RETURNING event
                        """, logger: logger)
                    taken = try await count(rows)
                case .deadLetter(let reason):
                    try await connection.query(
                        """
                        INSERT INTO \(unescaped: schema).dead_letter (subscription, source, event_id, event_time, action, time_value, payload,
                            reason, last_status, response, attempts, first_attempt_at, last_attempt_at, dead_at)
                        SELECT d.subscription, e.source, e.event_id, e.event_time, e.action, e.time_value, e.payload, \(reason), \(outcome.status),
                            \(ByteBuffer(bytes: outcome.responseSnippet.prefix(1024))), d.attempts + 1, coalesce(d.first_attempt_at, \(at)), \(at),
                            \(outcome.decidedAt.millisecondsSinceEpoch)
                        FROM \(unescaped: schema).delivery d JOIN \(unescaped: schema).event e ON e.id = d.event
                        WHERE d.subscription = \(subscription) AND d.claim_token = \(claimed.token)
                        """, logger: logger)
                    taken = try await remove(subscription, token: claimed.token, on: connection)
                }
                if taken > 0 { applied += 1 }
            }
            return (applied, outcomes.count - applied)
        }
    }

    /// Puts claimed requests that were never sent (a stop came first) back in the queue, due at once.
    public func release(_ tokens: [Int64], subscription: String) async throws {
        guard !tokens.isEmpty else { return }
        try await client.transaction(logger: logger) { connection in
            try await connection.query(
                """
                UPDATE \(unescaped: schema).delivery SET claim_token = NULL, claimed_by = NULL, visible_at = now()
                WHERE subscription = \(subscription) AND claim_token = ANY(\(tokens))
                """, logger: logger)
            for token in tokens { try await releaseGate(subscription, token: token, on: connection) }
        }
    }

    private func nextToken(_ connection: PostgresConnection) async throws -> Int64 {
        let rows = try await connection.query("SELECT nextval('\(unescaped: schema).claim_token')", logger: logger)
        for try await token in rows.decode(Int64.self) { return token }
        preconditionFailure("nextval returns a row")
    }

    /// Makes `members` (loose rows, locked by this transaction) a batch: event-time order, an id made from its
    /// event ids, its first member the unit every later claim takes it by. Returns that unit.
    private func compose(_ members: [(event: Int64, time: Int64)], subscription: String, on connection: PostgresConnection) async throws -> Int64 {
        let ordered = members.sorted { ($0.time, $0.event) < ($1.time, $1.event) }
        let unit = ordered[0].event
        let ids = try await connection.query(
            """
            SELECT e.event_id FROM unnest(\(ordered.map(\.event))) WITH ORDINALITY AS m(event, seq)
            JOIN \(unescaped: schema).event e ON e.id = m.event ORDER BY m.seq
            """, logger: logger)
        var eventIDs: [String] = []
        for try await id in ids.decode(String.self) { eventIDs.append(id) }
        let batchID = WebhookRequestBuilder.webhookID(subscription: subscription, eventIDs: eventIDs, batched: true)
        try await connection.query(
            """
            UPDATE \(unescaped: schema).delivery d SET batch_id = \(batchID), batch_seq = m.seq - 1, unit = \(unit)
            FROM unnest(\(ordered.map(\.event))) WITH ORDINALITY AS m(event, seq)
            WHERE d.subscription = \(subscription) AND d.event = m.event
            """, logger: logger)
        return unit
    }

    /// The rows claimed under `tokens`, as requests: each one's deliveries in body order.
    private func claimed(_ subscription: String, tokens: [Int64], on connection: PostgresConnection) async throws -> [ClaimedRequest] {
        let rows = try await connection.query(
            """
            SELECT d.event, e.event_id, d.event_time, e.action, e.time_value, e.payload, d.attempts, d.first_attempt_at,
                d.batch_id, d.batch_seq, d.claim_token, e.queued_at
            FROM \(unescaped: schema).delivery d JOIN \(unescaped: schema).event e ON e.id = d.event
            WHERE d.subscription = \(subscription) AND d.claim_token = ANY(\(tokens))
            ORDER BY d.claim_token, d.batch_seq NULLS FIRST, d.event_time, d.event
            """, logger: logger)
        var requests: [ClaimedRequest] = []
        for try await (event, eventID, time, action, timeValue, payload, attempts, firstAttempt, batchID, batchSeq, token, queuedAt)
            in rows.decode((Int64, String, Int64, String, String, ByteBuffer, Int, Int64?, String?, Int?, Int64, Int64).self)
        {
            let delivery = Delivery(
                id: event, subscription: subscription, eventID: eventID, eventTime: Timestamp(millisecondsSinceEpoch: time), action: action,
                timeValue: timeValue, payload: Array(buffer: payload), attempts: attempts,
                firstAttemptAt: firstAttempt.map(Timestamp.init(millisecondsSinceEpoch:)), batchID: batchID, batchPosition: batchSeq,
                nextAttemptAt: Timestamp(millisecondsSinceEpoch: 0), queuedAt: Timestamp(millisecondsSinceEpoch: queuedAt))
            if let last = requests.last, last.token == token {
                requests[requests.count - 1] = ClaimedRequest(token: token, deliveries: last.deliveries + [delivery])
            } else {
                requests.append(ClaimedRequest(token: token, deliveries: [delivery]))
            }
        }
        return requests
    }

    /// Deletes the rows claimed under `token` and releases their events (an event's row goes with its last
    /// delivery); the number of rows deleted.
    private func remove(_ subscription: String, token: Int64, on connection: PostgresConnection) async throws -> Int {
        let rows = try await connection.query(
            """
            WITH gone AS (
                DELETE FROM \(unescaped: schema).delivery WHERE subscription = \(subscription) AND claim_token = \(token) RETURNING event
            )
            UPDATE \(unescaped: schema).event e SET pending = e.pending - 1 FROM gone WHERE e.id = gone.event RETURNING e.id, e.pending
            """, logger: logger)
        var released = 0
        var unneeded: [Int64] = []
        for try await (event, pending) in rows.decode((Int64, Int).self) {
            released += 1
            if pending <= 0 { unneeded.append(event) }
        }
        if !unneeded.isEmpty {
            try await connection.query("DELETE FROM \(unescaped: schema).event WHERE id = ANY(\(unneeded))", logger: logger)
        }
        return released
    }

    private struct SubscriptionToken: Hashable, Comparable {
        let subscription: String
        let token: Int64
        init(_ subscription: String, _ token: Int64) {
            self.subscription = subscription
            self.token = token
        }
        static func < (a: Self, b: Self) -> Bool { (a.subscription, a.token) < (b.subscription, b.token) }
    }

    private func releaseGate(_ subscription: String, token: Int64, on connection: PostgresConnection) async throws {
        try await connection.query(
            "UPDATE \(unescaped: schema).strict_gate SET claim_token = NULL WHERE subscription = \(subscription) AND claim_token = \(token)",
            logger: logger)
    }
}
