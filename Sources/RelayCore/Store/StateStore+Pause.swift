import GRDB

/// Why and since when a subscription is paused.
public struct SubscriptionPause: Sendable, Equatable {
    /// As logged: `paused after 20 consecutive HTTP 401`.
    public var reason: String
    public var since: Timestamp
    /// ``WebhookRequestBuilder/fingerprint(of:)`` of the webhook it was paused with.
    public var webhook: String

    /// A pause as given.
    public init(reason: String, since: Timestamp, webhook: String) {
        self.reason = reason
        self.since = since
        self.webhook = webhook
    }
}

extension StateStore {
    /// The pause of a subscription, if it is paused.
    public func pause(of subscription: String) async throws(StoreError) -> SubscriptionPause? {
        try await read("reading the pause of \(subscription)") { db in try Self.pause(of: subscription, db) }
    }

    static func pause(of subscription: String, _ db: Database) throws -> SubscriptionPause? {
        try Row.fetchOne(
            db, sql: "SELECT reason, paused_at, webhook FROM subscription_pause WHERE subscription = ?", arguments: [subscription]
        ).map { SubscriptionPause(reason: $0["reason"], since: Timestamp(millisecondsSinceEpoch: $0["paused_at"]), webhook: $0["webhook"]) }
    }

    /// Pauses a subscription (kept across restarts).
    public func pause(_ subscription: String, _ pause: SubscriptionPause) async throws(StoreError) {
        try await write("pausing \(subscription)") { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO subscription_pause (subscription, reason, paused_at, webhook) VALUES (?, ?, ?, ?)",
                arguments: [subscription, pause.reason, pause.since.millisecondsSinceEpoch, pause.webhook])
        }
    }

    /// Resumes a subscription; false when it was not paused.
    @discardableResult
    public func resume(_ subscription: String) async throws(StoreError) -> Bool {
        try await write("resuming \(subscription)") { db in
            try db.execute(sql: "DELETE FROM subscription_pause WHERE subscription = ?", arguments: [subscription])
            return db.changesCount > 0
        }
    }
}
