import GRDB
import GRDBSQLite

/// Binds and steps a cached GRDB statement through SQLite's C API. The ingest path inserts two rows per event at
/// tens of thousands of events a second; GRDB's `StatementArguments` allocate per value, which the profile showed
/// as the writer thread's largest cost.
struct FastStatement {
    private let statement: Statement
    private let handle: OpaquePointer
    private let db: Database

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

    /// Binds `values` and hands result rows to `body` until it returns false or they run out: a caller that needs
    /// only some of the rows a LIMIT allows does not pay for stepping through the rest.
    func step(_ values: [FastValue], _ body: (FastRow) -> Bool) throws {
        sqlite3_reset(handle)
        defer { unbind() }
        try withBound(values) {
            while true {
                let code = sqlite3_step(handle)
                if code == SQLITE_DONE { return }
                guard code == SQLITE_ROW else { throw error(code) }
                if !body(FastRow(handle: handle)) { return }
            }
        }
    }

    /// Binds `values` (`String`, `Int64`, `[UInt8]`) to ?1, ?2... and runs the statement; returns rows changed.
    @discardableResult
    func run(_ values: FastValue...) throws -> Int { try run(values) }

    /// Binds two or three integers and runs the statement; returns rows changed. The delivery rows' statements,
    /// run once or twice per delivery, take only integers: without the array of values and the scratch buffer of
    /// ``withBound``, whose retains, releases and allocations were a twentieth of the writer's time.
    @discardableResult
    func run(integers first: Int64, _ second: Int64, _ third: Int64? = nil) throws -> Int {
        sqlite3_reset(handle)
        defer { unbind() }
        sqlite3_bind_int64(handle, 1, first)
        sqlite3_bind_int64(handle, 2, second)
        if let third { sqlite3_bind_int64(handle, 3, third) }
        return try changes(afterStep: sqlite3_step(handle))
    }

    /// Binds integers to ?1, ?2... and runs the statement; returns rows changed. For statements of many rows.
    @discardableResult
    func run(integerList values: [Int64]) throws -> Int {
        sqlite3_reset(handle)
        defer { unbind() }
        for (index, value) in values.enumerated() { sqlite3_bind_int64(handle, Int32(index + 1), value) }
        return try changes(afterStep: sqlite3_step(handle))
    }

    /// Binds `values` and runs the statement; returns rows changed.
    @discardableResult
    func run(_ values: [FastValue]) throws -> Int {
        sqlite3_reset(handle)
        defer { unbind() }
        return try changes(afterStep: withBound(values) { sqlite3_step(handle) })
    }

    /// The rows the step that returned `code` changed, or its error.
    private func changes(afterStep code: Int32) throws -> Int {
        guard code == SQLITE_DONE else { throw error(code) }
        return Int(sqlite3_changes(db.sqliteConnection))
    }

    /// Binds `values` to ?1, ?2... and runs `body` while they are bound. Text and blobs are copied into one scratch
    /// buffer (on the stack when small) and bound in place (SQLITE_STATIC) for the call: with a Swift string passed
    /// as a C string and SQLite told to copy (SQLITE_TRANSIENT), every text value cost two allocations, a sixth of the
    /// relay's mallocs at batch 1; binding each value inside its own nested `withUTF8` scope put 5% of the relay's
    /// time with five subscriptions at batch 50 in retains and releases under it (3.4% with one buffer).
    private func withBound<R>(_ values: [FastValue], _ body: () throws -> R) rethrows -> R {
        var bytes = 0
        for value in values {
            switch value {
            case .text(let text): bytes += text.utf8.count
            case .blob(let blob): bytes += blob.count
            case .integer, .null: break
            }
        }
        // One byte at least: an empty text must bind a non-NULL address, or it binds NULL rather than ''.
        return try withUnsafeTemporaryAllocation(byteCount: bytes + 1, alignment: 1) { scratch in
            var offset = 0
            for (index, value) in values.enumerated() {
                let position = Int32(index + 1)
                switch value {
                case .text(let text):
                    let count = text.utf8.count
                    let start = scratch.baseAddress! + offset
                    UnsafeMutableRawBufferPointer(rebasing: scratch[offset..<offset + count]).copyBytes(from: text.utf8)
                    sqlite3_bind_text(handle, position, start.assumingMemoryBound(to: CChar.self), Int32(count), nil /* SQLITE_STATIC */)
                    offset += count
                case .blob(let blob):
                    guard !blob.isEmpty else {
                        sqlite3_bind_zeroblob(handle, position, 0)
                        continue
                    }
                    let start = scratch.baseAddress! + offset
                    UnsafeMutableRawBufferPointer(rebasing: scratch[offset..<offset + blob.count]).copyBytes(from: blob)
                    sqlite3_bind_blob(handle, position, start, Int32(blob.count), nil /* SQLITE_STATIC */)
                    offset += blob.count
                case .integer(let integer):
                    sqlite3_bind_int64(handle, position, integer)
                case .null:
                    sqlite3_bind_null(handle, position)
                }
            }
            return try body()
        }
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
