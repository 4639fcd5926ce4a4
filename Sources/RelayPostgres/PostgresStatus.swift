import Logging
import PostgresNIO
import RelayCore

/// What `status` and `top` show of a PostgreSQL store shared by several instances: who holds each source's
/// lease, and what each instance has out.
public struct PostgresStatus: Sendable, PostgresPart {
    /// A lease as it stands now.
    public struct Holder: Sendable, Equatable {
        public let key: String
        public let holder: String
        public let epoch: Int64
        /// How long the lease runs on unrenewed; nil once it has expired (nobody polls until it is taken).
        public let expiresIn: Duration?
    }

    /// Deliveries claimed by one instance for one subscription, their claims not yet timed out.
    public struct InFlight: Sendable, Equatable {
        public let instance: String
        public let subscription: String
        public let requests: Int
        public let deliveries: Int

        public init(instance: String, subscription: String, requests: Int, deliveries: Int) {
            self.instance = instance
            self.subscription = subscription
            self.requests = requests
            self.deliveries = deliveries
        }
    }

    let database: RelayDatabase

    /// The status of `database`.
    public init(_ database: RelayDatabase) {
        self.database = database
    }

    /// Every lease, by key.
    public func holders() async throws -> [Holder] {
        let rows = try await client.query(
            """
            SELECT key, holder, epoch, CASE WHEN expires_at > now() THEN (extract(epoch FROM expires_at - now()) * 1000)::bigint END
            FROM \(unescaped: schema).lease ORDER BY key
            """, logger: logger)
        var holders: [Holder] = []
        for try await (key, holder, epoch, remaining) in rows.decode((String, String, Int64, Int64?).self) {
            holders.append(Holder(key: key, holder: holder, epoch: epoch, expiresIn: remaining.map { .milliseconds($0) }))
        }
        return holders
    }

    /// What each instance has out, by instance and subscription.
    public func inFlight() async throws -> [InFlight] {
        let rows = try await client.query(
            """
            SELECT claimed_by, subscription, count(DISTINCT claim_token)::int8, count(*)::int8 FROM \(unescaped: schema).delivery
            WHERE claim_token IS NOT NULL AND visible_at > now()
            GROUP BY claimed_by, subscription ORDER BY claimed_by, subscription
            """, logger: logger)
        var out: [InFlight] = []
        for try await (instance, subscription, requests, deliveries) in rows.decode((String, String, Int64, Int64).self) {
            out.append(InFlight(instance: instance, subscription: subscription, requests: Int(requests), deliveries: Int(deliveries)))
        }
        return out
    }

    /// One subscription's shared queue as the metrics page shows it.
    public struct QueueGauges: Sendable, Equatable {
        /// Deliveries queued, claimed or not.
        public var pending = 0
        /// The time of the oldest event queued; nil when none is.
        public var oldestEventTime: Timestamp?
        public var deadLetters = 0
        public var paused = false

        public init(pending: Int = 0, oldestEventTime: Timestamp? = nil, deadLetters: Int = 0, paused: Bool = false) {
            self.pending = pending
            self.oldestEventTime = oldestEventTime
            self.deadLetters = deadLetters
            self.paused = paused
        }
    }

    /// Every subscription's queue gauges, read in one statement so that they come from one snapshot: a delivery
    /// dead-lettered between two separate reads would count in both its queue and its dead letters.
    public func queueGauges() async throws -> [String: QueueGauges] {
        let rows = try await client.query(
            """
            SELECT 'queued', subscription, count(*)::int8, min(event_time) FROM \(unescaped: schema).delivery GROUP BY subscription
            UNION ALL
            SELECT 'dead', subscription, count(*)::int8, NULL FROM \(unescaped: schema).dead_letter GROUP BY subscription
            UNION ALL
            SELECT 'paused', subscription, 0, NULL FROM \(unescaped: schema).subscription_pause WHERE reason IS NOT NULL
            """, logger: logger)
        var gauges: [String: QueueGauges] = [:]
        for try await (kind, subscription, count, oldest) in rows.decode((String, String, Int64, Int64?).self) {
            switch kind {
            case "queued":
                gauges[subscription, default: .init()].pending = Int(count)
                gauges[subscription, default: .init()].oldestEventTime = oldest.map { Timestamp(millisecondsSinceEpoch: $0) }
            case "dead": gauges[subscription, default: .init()].deadLetters = Int(count)
            default: gauges[subscription, default: .init()].paused = true
            }
        }
        return gauges
    }

    /// Queued deliveries per subscription, claimed or not.
    public func queueDepths() async throws -> [String: Int] {
        try await counts("SELECT subscription, count(*)::int8 FROM \(unescaped: schema).delivery GROUP BY subscription")
    }

    private func counts(_ query: PostgresQuery) async throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for try await (name, count) in try await client.query(query, logger: logger).decode((String, Int64).self) { counts[name] = Int(count) }
        return counts
    }
}
