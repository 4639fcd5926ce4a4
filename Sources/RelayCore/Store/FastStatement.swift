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
        bind(values)
        defer { sqlite3_reset(handle) }
        var rows: [T] = []
        while true {
            let code = sqlite3_step(handle)
            if code == SQLITE_DONE { return rows }
            guard code == SQLITE_ROW else {
                throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
            }
            rows.append(read(FastRow(handle: handle)))
        }
    }

    /// Binds `values` (`String`, `Int64`, `[UInt8]`) to ?1, ?2... and runs the statement; returns rows changed.
    @discardableResult
    func run(_ values: FastValue...) throws -> Int { try run(values) }

    /// Binds `values` and runs the statement; returns rows changed.
    @discardableResult
    func run(_ values: [FastValue]) throws -> Int {
        sqlite3_reset(handle)
        bind(values)
        let code = sqlite3_step(handle)
        sqlite3_reset(handle)
        guard code == SQLITE_DONE else {
            throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
        }
        return Int(sqlite3_changes(db.sqliteConnection))
    }

    private func bind(_ values: [FastValue]) {
        for (index, value) in values.enumerated() {
            let position = Int32(index + 1)
            switch value {
            case .text(let text): sqlite3_bind_text(handle, position, text, -1, Self.transient)
            case .integer(let integer): sqlite3_bind_int64(handle, position, integer)
            case .null: sqlite3_bind_null(handle, position)
            case .blob(let bytes):
                bytes.withUnsafeBytes { _ = sqlite3_bind_blob(handle, position, $0.baseAddress, Int32($0.count), Self.transient) }
            }
        }
    }
}

/// The current result row of a ``FastStatement`` query, read by column index.
struct FastRow {
    let handle: OpaquePointer

    func integer(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }

    func optionalInteger(_ column: Int32) -> Int64? {
        sqlite3_column_type(handle, column) == SQLITE_NULL ? nil : sqlite3_column_int64(handle, column)
    }

    func text(_ column: Int32) -> String {
        guard let pointer = sqlite3_column_text(handle, column) else { return "" }
        return String(cString: pointer)
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
