import Foundation
import Logging
import PostgresNIO

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
        ]
    ]

    /// The newest version this release knows.
    public static var latestVersion: Int { versions.count }

    /// Whether `name` can name the schema: a lowercase SQL identifier, used unquoted in statements.
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, (1...63).contains(name.utf8.count) else { return false }
        let lower = UInt8(ascii: "a")...UInt8(ascii: "z")
        let digits = UInt8(ascii: "0")...UInt8(ascii: "9")
        return (lower.contains(first) || first == UInt8(ascii: "_"))
            && name.utf8.allSatisfy { lower.contains($0) || digits.contains($0) || $0 == UInt8(ascii: "_") }
    }

    /// Brings `schema` to the latest version; returns the versions this call applied (none when another instance
    /// did it first). Refuses a schema written by a newer release, before changing anything.
    @discardableResult
    public static func migrate(_ client: PostgresClient, schema: String, logger: Logger) async throws -> [Int] {
        precondition(isValidName(schema), "schema names are checked when the config is read")
        return try await client.transaction(logger: logger) { connection in
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
