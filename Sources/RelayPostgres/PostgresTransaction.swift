import Logging
import PostgresNIO

extension PostgresClient {
    /// `withTransaction`, throwing the body's own error when the rollback went through: postgres-nio wraps every
    /// error of a transaction, and callers here decide on theirs (a lost lease, a newer schema).
    func transaction<Result: Sendable>(
        logger: Logger, _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        do {
            return try await withTransaction(logger: logger) { connection in try await body(connection) }
        } catch let error as PostgresTransactionError {
            if let bodyError = error.closureError, error.rollbackError == nil { throw bodyError }
            throw error
        }
    }
}
