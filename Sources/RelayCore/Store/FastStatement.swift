import GRDB
import GRDBSQLite

/// Binds and steps a cached GRDB statement through SQLite's C API. The ingest path inserts two rows per event at
/// tens of thousands of events a second; GRDB's `StatementArguments` allocate per value, which the profile showed
/// as the writer thread's largest cost.
struct FastStatement {
    private let statement: Statement
    private let handle: OpaquePointer
    private let db: Database
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    init(_ db: Database, sql: String) throws {
        self.db = db
        statement = try db.cachedStatement(sql: sql)
        handle = statement.sqliteStatement
    }

    /// Binds `values` (`String`, `Int64`, `[UInt8]`) to ?1, ?2... and runs the statement; returns rows changed.
    @discardableResult
    func run(_ values: FastValue...) throws -> Int {
        sqlite3_reset(handle)
        for (index, value) in values.enumerated() {
            let position = Int32(index + 1)
            switch value {
            case .text(let text): sqlite3_bind_text(handle, position, text, -1, Self.transient)
            case .integer(let integer): sqlite3_bind_int64(handle, position, integer)
            case .blob(let bytes):
                bytes.withUnsafeBytes { _ = sqlite3_bind_blob(handle, position, $0.baseAddress, Int32($0.count), Self.transient) }
            }
        }
        let code = sqlite3_step(handle)
        sqlite3_reset(handle)
        guard code == SQLITE_DONE else {
            throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
        }
        return Int(sqlite3_changes(db.sqliteConnection))
    }
}

/// A value for ``FastStatement``.
enum FastValue {
    case text(String)
    case integer(Int64)
    case blob([UInt8])
}
