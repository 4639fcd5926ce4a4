import Foundation
import Logging
import PostgresNIO
import RelayCore

/// The relay's tables in one schema of a PostgreSQL database, versioned: every instance migrates at start, under a
/// transaction-scoped advisory lock, so that instances starting together migrate once and none sees half a version.
public enum PostgresSchema {
    /// Each version's statements, in order; a version is never changed once released, only followed.
    static let versions: [[String]] = [
        [
            """
            CREATE TABLE {schema}.lease (
                key text PRIMARY KEY,
                holder text NOT NULL,
                epoch bigint NOT NULL,
                expires_at timestamptz NOT NULL
            )
            """,
            """
            CREATE TABLE {schema}.cursor (
                source text PRIMARY KEY,
                position bigint NOT NULL,
                epoch bigint NOT NULL,
                updated_at timestamptz NOT NULL
            )
            """,
        ],
        [
            // Each event's bytes once; a delivery row per (subscription, event). `unit` is the row a claim takes a
            // request by: the row itself, or its batch's first member. A claim hides a unit until `visible_at`.
            """
            CREATE TABLE {schema}.event (
                id bigserial PRIMARY KEY,
                source text NOT NULL,
                event_id text NOT NULL,
                event_time bigint NOT NULL,
                action text NOT NULL,
                time_value text NOT NULL,
                payload bytea NOT NULL,
                queued_at bigint NOT NULL,
                pending integer NOT NULL,
                UNIQUE (source, event_time, event_id)
            )
            """,
            """
            CREATE TABLE {schema}.delivery (
                subscription text NOT NULL,
                event bigint NOT NULL,
                event_time bigint NOT NULL,
                unit bigint NOT NULL,
                visible_at timestamptz NOT NULL DEFAULT now(),
                attempts integer NOT NULL DEFAULT 0,
                first_attempt_at bigint,
                last_attempt_at bigint,
                last_status integer,
                last_error text,
                batch_id text,
                batch_seq integer,
                claim_token bigint,
                claimed_by text,
                PRIMARY KEY (subscription, event)
            ) WITH (fillfactor = 80)
            """,
            "CREATE INDEX delivery_due ON {schema}.delivery (subscription, visible_at, event_time, event) WHERE event = unit",
            "CREATE INDEX delivery_line ON {schema}.delivery (subscription, event_time, event)",
            "CREATE INDEX delivery_unit ON {schema}.delivery (subscription, unit)",
            "CREATE INDEX delivery_claim ON {schema}.delivery (subscription, claim_token) WHERE claim_token IS NOT NULL",
            "CREATE SEQUENCE {schema}.claim_token",
            // Strict subscriptions: one request out at a time across every instance, under a claim of its own.
            """
            CREATE TABLE {schema}.strict_gate (
                subscription text PRIMARY KEY,
                claim_token bigint,
                claim_expires_at timestamptz
            )
            """,
            """
            CREATE TABLE {schema}.dead_letter (
                id bigserial PRIMARY KEY,
                subscription text NOT NULL,
                event_id text NOT NULL,
                event_time bigint NOT NULL,
                action text NOT NULL,
                time_value text NOT NULL,
                payload bytea NOT NULL,
                reason text NOT NULL,
                last_status integer,
                response bytea NOT NULL,
                attempts integer NOT NULL,
                first_attempt_at bigint NOT NULL,
                last_attempt_at bigint NOT NULL,
                dead_at bigint NOT NULL
            )
            """,
            "CREATE INDEX dead_letter_by_age ON {schema}.dead_letter (dead_at)",
        ],
        [
            // A webhook's rate limit and circuit breaker, one row each for every instance to share.
            """
            CREATE TABLE {schema}.webhook_limit (
                key text PRIMARY KEY,
                tokens double precision NOT NULL,
                refreshed_at timestamptz NOT NULL
            )
            """,
            """
            CREATE TABLE {schema}.webhook_breaker (
                key text PRIMARY KEY,
                state text NOT NULL CHECK (state IN ('closed', 'open', 'probing')),
                failures integer NOT NULL,
                interval_ms bigint NOT NULL,
                open_until timestamptz,
                probe_until timestamptz
            )
            """,
        ],
        [
            // The ids a read may still return, keyed by time first as in SQLite; and the settle mark beside the
            // live cursor.
            """
            CREATE TABLE {schema}.seen (
                source text NOT NULL,
                event_time bigint NOT NULL,
                event_id text NOT NULL,
                PRIMARY KEY (source, event_time, event_id)
            )
            """,
            "ALTER TABLE {schema}.cursor ADD COLUMN settled bigint",
        ],
        [
            // A replay stores the event again under its source.
            "ALTER TABLE {schema}.dead_letter ADD COLUMN source text NOT NULL DEFAULT ''",
        ],
        [
            // Seen ids are kept from here on, as in SQLite: reads never start before it.
            "ALTER TABLE {schema}.cursor ADD COLUMN seen_horizon bigint",
        ],
        [
            // Dead letters in a row towards `pauseAfter`, counted for all instances; a pause while `reason` is set,
            // probed by one instance at a time once `probe_at` has passed.
            """
            CREATE TABLE {schema}.subscription_pause (
                subscription text PRIMARY KEY,
                dead_in_a_row integer NOT NULL DEFAULT 0,
                reason text,
                paused_at bigint,
                webhook text,
                probe_at timestamptz
            )
            """,
        ],
        [
            // `intilery-relay replay` requests, carried out by whichever instance polls the subscription's source.
            """
            CREATE TABLE {schema}.replay_request (
                id bigserial PRIMARY KEY,
                subscription text NOT NULL,
                since bigint NOT NULL,
                until bigint NOT NULL,
                position bigint NOT NULL,
                queued integer NOT NULL DEFAULT 0,
                requested_at bigint NOT NULL,
                finished_at bigint
            )
            """,
        ],
        [
            // Subscription cursors, as in SQLite: where a subscription that is behind reads on its own, and the
            // events the shared poll saw before a joining one joined, for its tail read.
            """
            CREATE TABLE {schema}.subscription_cursor (
                subscription text PRIMARY KEY,
                source text NOT NULL,
                state text NOT NULL CHECK (state IN ('current', 'behind', 'joining')),
                position bigint,
                tail_until bigint,
                reason text,
                since bigint
            )
            """,
            """
            CREATE TABLE {schema}.join_tail (
                subscription text NOT NULL,
                event_id text NOT NULL,
                PRIMARY KEY (subscription, event_id)
            )
            """,
        ],
        [
            // Names with rows that the config no longer has, and since when: deleted after orphanRetention.
            "CREATE TABLE {schema}.orphan (subscription text PRIMARY KEY, since bigint NOT NULL)",
        ],
        [
            // The ids a replay has queued at exactly its position, skipped when it goes on from there (ReadBoundary).
            "ALTER TABLE {schema}.replay_request ADD COLUMN boundary_ids text[] NOT NULL DEFAULT '{}'",
        ],
        [
            // As a replay's, for a catch-up: kept with the position they were queued at, which other paths move too.
            "ALTER TABLE {schema}.subscription_cursor ADD COLUMN boundary_position bigint",
            "ALTER TABLE {schema}.subscription_cursor ADD COLUMN boundary_ids text[] NOT NULL DEFAULT '{}'",
        ],
    ]

    /// The newest version this release knows.
    public static var latestVersion: Int { versions.count }

    /// Whether `name` can name the schema: a lowercase SQL identifier, used unquoted in statements.
    public static func isValidName(_ name: String) -> Bool { PostgresStoreConfig.isValidSchemaName(name) }

    /// Brings `schema` to the latest version; returns the versions this call applied (none when another instance
    /// did it first). Refuses a schema written by a newer release, before changing anything.
    @discardableResult
    public static func migrate(_ database: RelayDatabase) async throws -> [Int] {
        let (schema, logger) = (database.schema, database.logger)
        return try await database.client.transaction(logger: logger) { connection in
            // One lock for every instance migrating this schema: hashtext of its name, in the relay's own space.
            try await connection.query("SELECT pg_advisory_xact_lock(7419, hashtext(\(schema)))", logger: logger)
            try await connection.query("CREATE SCHEMA IF NOT EXISTS \(unescaped: schema)", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS \(unescaped: schema).migration (
                    version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
                """, logger: logger)
            var current = 0
            let rows = try await connection.query(
                "SELECT coalesce(max(version), 0) FROM \(unescaped: schema).migration", logger: logger)
            for try await version in rows.decode(Int.self) { current = version }
            guard current <= latestVersion else { throw NewerSchema(schema: schema, version: current, known: latestVersion) }
            var applied: [Int] = []
            for version in (current + 1)..<(latestVersion + 1) {
                for statement in versions[version - 1] {
                    try await connection.query(
                        PostgresQuery(unsafeSQL: statement.replacingOccurrences(of: "{schema}", with: schema)), logger: logger)
                }
                try await connection.query("INSERT INTO \(unescaped: schema).migration (version) VALUES (\(version))", logger: logger)
                applied.append(version)
            }
            return applied
        }
    }

    /// The schema was migrated by a newer release than this one.
    public struct NewerSchema: Error, CustomStringConvertible {
        public let schema: String
        public let version: Int
        public let known: Int
        public var description: String {
            "PostgreSQL schema \(schema) is at version \(version), written by a newer intilery-relay (this one knows up to \(known)); run that version"
        }
    }
}
