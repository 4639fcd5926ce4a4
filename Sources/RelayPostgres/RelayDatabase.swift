import Logging
import PostgresNIO

/// The relay's schema in a PostgreSQL database, as every part of the store reaches it: the client, the schema's
/// name (used unquoted in statements, so checked once, here) and where the parts log.
public struct RelayDatabase: Sendable {
    public let client: PostgresClient
    public let schema: String
    public let logger: Logger

    /// `schema` is a lowercase SQL identifier (``PostgresSchema/isValidName(_:)``; the config reader checks it).
    public init(client: PostgresClient, schema: String, logger: Logger) {
        precondition(PostgresSchema.isValidName(schema), "schema names are checked when the config is read")
        self.client = client
        self.schema = schema
        self.logger = logger
    }
}

/// A part of the store working in one ``RelayDatabase``.
protocol PostgresPart {
    var database: RelayDatabase { get }
}

extension PostgresPart {
    var client: PostgresClient { database.client }
    var schema: String { database.schema }
    var logger: Logger { database.logger }

    /// The rows a statement returned (read to the end).
    func count(_ rows: PostgresRowSequence) async throws -> Int {
        var count = 0
        for try await _ in rows { count += 1 }
        return count
    }

    /// A duration as the whole milliseconds statements multiply `interval '1 millisecond'` by.
    func milliseconds(_ duration: Duration) -> Int64 { Int64(duration / .milliseconds(1)) }
}
