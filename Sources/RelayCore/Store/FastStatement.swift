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

    /// Binds `values` and reads every result row with `read`.
    func query<T>(_ values: [FastValue], _ read: (FastRow) -> T) throws -> [T] {
        sqlite3_reset(handle)
        defer { unbind() }
        return try withBound(values) {
            var rows: [T] = []
            while true {
                let code = sqlite3_step(handle)
                if code == SQLITE_DONE { return rows }
                guard code == SQLITE_ROW else { throw error(code) }
                rows.append(read(FastRow(handle: handle)))
            }
        }
    }

    /// Binds `values` (`String`, `Int64`, `[UInt8]`) to ?1, ?2... and runs the statement; returns rows changed.
    @discardableResult
    func run(_ values: FastValue...) throws -> Int { try run(values) }

    /// Binds `values` and runs the statement; returns rows changed.
    @discardableResult
    func run(_ values: [FastValue]) throws -> Int {
        sqlite3_reset(handle)
        defer { unbind() }
        let code = withBound(values) { sqlite3_step(handle) }
        guard code == SQLITE_DONE else { throw error(code) }
        return Int(sqlite3_changes(db.sqliteConnection))
    }

    /// Binds `values` from `index` on to ?(index + 1)... and runs `body` while they are bound. Text and blobs are
    /// bound in place (SQLITE_STATIC), each within the scope that keeps its bytes valid, so that binding copies
    /// nothing: with a Swift string passed as a C string and SQLite told to copy (SQLITE_TRANSIENT), every text value
    /// cost two allocations, a sixth of the relay's mallocs at batch 1.
    private func withBound<R>(_ values: [FastValue], from index: Int = 0, _ body: () throws -> R) rethrows -> R {
        guard index < values.count else { return try body() }
        let position = Int32(index + 1)
        switch values[index] {
        case .text(var text):
            return try text.withUTF8 { bytes in
                // An empty buffer may have no address, and a NULL pointer binds NULL rather than ''.
                if let address = bytes.baseAddress {
                    sqlite3_bind_text(handle, position, address, Int32(bytes.count), nil /* SQLITE_STATIC */)
                } else {
                    sqlite3_bind_text(handle, position, "", 0, Self.transient)
                }
                return try withBound(values, from: index + 1, body)
            }
        case .blob(let blob):
            return try blob.withUnsafeBytes { bytes in
                if let address = bytes.baseAddress, !bytes.isEmpty {
                    sqlite3_bind_blob(handle, position, address, Int32(bytes.count), nil /* SQLITE_STATIC */)
                } else {
                    sqlite3_bind_zeroblob(handle, position, 0)
                }
                return try withBound(values, from: index + 1, body)
            }
        case .integer(let integer):
            sqlite3_bind_int64(handle, position, integer)
        case .null:
            sqlite3_bind_null(handle, position)
        }
        return try withBound(values, from: index + 1, body)
    }

    /// Resets the statement and drops its bindings, which point into memory that is gone once ``withBound`` returns:
    /// the statement is GRDB's cached one, and nothing may step it with them.
    private func unbind() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    private func error(_ code: Int32) -> DatabaseError {
        DatabaseError(
            resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
    }
}

/// The current result row of a ``FastStatement`` query, read by column index.
struct FastRow {
    let handle: OpaquePointer

    func integer(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }

    func optionalInteger(_ column: Int32) -> Int64? {
        sqlite3_column_type(handle, column) == SQLITE_NULL ? nil : sqlite3_column_int64(handle, column)
    }

    /// The column's text, all of its bytes: a NUL inside an event id (bound with its length) is kept.
    func text(_ column: Int32) -> String {
        guard let pointer = sqlite3_column_text(handle, column) else { return "" }
        let count = Int(sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
    }

    func optionalText(_ column: Int32) -> String? {
        sqlite3_column_type(handle, column) == SQLITE_NULL ? nil : text(column)
    }

    func blob(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(handle, column))
        guard count > 0, let pointer = sqlite3_column_blob(handle, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }
}

/// A value for ``FastStatement``.
enum FastValue {
    case text(String)
    case integer(Int64)
    case blob([UInt8])
    case null
}
