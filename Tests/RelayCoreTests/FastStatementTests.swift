import Foundation
import GRDB
import GRDBSQLite
@testable import RelayCore
import Testing

/// FastStatement binds text and blobs from one scratch buffer, without SQLite copying them: what it writes reads back
/// byte for byte, whatever the value (small or large, empty, with a NUL inside) and wherever it stands among the
/// others, and the cached statement keeps no pointer once it returns.
@Suite struct FastStatementTests {
    static func table() throws -> DatabaseQueue {
        let queue = try DatabaseQueue()
        try queue.write { db in try db.execute(sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, body BLOB)") }
        return queue
    }

    @Test(arguments: [
        "", "a", "short id", String(repeating: "long text past the inline size ", count: 20), "nul\u{0}inside", "é ✓ 🙂",
    ])
    func textAndBlobsReadBackAsWritten(_ name: String) throws {
        let queue = try Self.table()
        let body = Array(name.utf8) + [0, 255]
        let rows = try queue.write { db -> [(String, [UInt8])] in
            let insert = try FastStatement(db, sql: "INSERT INTO t (name, body) VALUES (?, ?)")
            #expect(try insert.run(.text(name), .blob(body)) == 1)
            let select = try FastStatement(db, sql: "SELECT name, body FROM t WHERE name = ?")
            return try select.query([.text(name)]) { ($0.text(0), $0.blob(1)) }
        }
        #expect(rows.count == 1, "found by the text it was written with")
        #expect(rows.first?.0 == name)
        #expect(rows.first?.1 == body)
        let stored = try queue.read { db in
            try Row.fetchOne(db, sql: "SELECT typeof(name) AS n, typeof(body) AS b, length(CAST(name AS BLOB)) AS l FROM t")
        }
        #expect(stored?["n"] == "text", "empty text is '' and not NULL")
        #expect(stored?["l"] == name.utf8.count)
        #expect(stored?["b"] == "blob")
    }

    @Test func manyValuesEachReadBackInItsOwnPlace() throws {
        let queue = try DatabaseQueue()
        // Past a stack allocation's size too: the scratch buffer then comes from the heap.
        let large = (0..<1_048_576).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let values: [FastValue] = [.text("first"), .integer(-5), .text(""), .blob([9, 8]), .null, .blob(large), .text("é last")]
        let row = try queue.write { db -> Row? in
            try db.execute(sql: "CREATE TABLE m (a, b, c, d, e, f, g)")
            #expect(try FastStatement(db, sql: "INSERT INTO m VALUES (?, ?, ?, ?, ?, ?, ?)").run(values) == 1)
            return try Row.fetchOne(db, sql: "SELECT a, b, c, typeof(c) AS tc, d, e, f, g FROM m")
        }
        #expect(row?["a"] == "first")
        #expect(row?["b"] == -5)
        #expect(row?["c"] == "")
        #expect(row?["tc"] == "text")
        #expect((row?["d"] as Data?).map { Array($0) } == [9, 8])
        #expect(row?.hasNull(atIndex: 5) == true)
        #expect((row?["f"] as Data?).map { Array($0) } == large)
        #expect(row?["g"] == "é last")
    }

    @Test func integersBindInTheirPlacesAndAMissingThirdIsNull() throws {
        let queue = try DatabaseQueue()
        let rows = try queue.write { db -> [Row] in
            try db.execute(sql: "CREATE TABLE i (a, b, c)")
            let insert = try FastStatement(db, sql: "INSERT INTO i VALUES (?, ?, ?)")
            #expect(try insert.run(integers: .min, 0, .max) == 1)
            // A third given before must not stay bound to the cached statement.
            #expect(try insert.run(integers: 7, -7) == 1)
            #expect(try FastStatement(db, sql: "DELETE FROM i WHERE a = ? AND b = ?").run(integers: 1, 2) == 0)
            return try Row.fetchAll(db, sql: "SELECT a, b, c FROM i ORDER BY rowid")
        }
        #expect(rows.map { [$0["a"], $0["b"], $0["c"]] as [Int64?] } == [[.min, 0, .max], [7, -7, nil]])
    }

    @Test func anEmptyBlobIsABlobAndNotNull() throws {
        let queue = try Self.table()
        _ = try queue.write { db in
            try FastStatement(db, sql: "INSERT INTO t (name, body) VALUES (?, ?)").run(.text("x"), .blob([]))
        }
        #expect(try queue.read { db in try String.fetchOne(db, sql: "SELECT typeof(body) FROM t") } == "blob")
    }

    @Test func theCachedStatementKeepsNoBindingOnceARunReturns() throws {
        let queue = try Self.table()
        let sql = "INSERT INTO t (name, body) VALUES (?, ?)"
        let expanded = try queue.write { db -> String? in
            try FastStatement(db, sql: sql).run(.text(String(repeating: "gone ", count: 40)), .blob([1, 2, 3]))
            // The same cached statement, as GRDB would find it: its parameters are NULL, not the bytes now freed.
            guard let text = sqlite3_expanded_sql(try db.cachedStatement(sql: sql).sqliteStatement) else { return nil }
            defer { sqlite3_free(text) }
            return String(cString: text)
        }
        #expect(expanded == "INSERT INTO t (name, body) VALUES (NULL, NULL)")
    }

    @Test func steppingStopsWhereTheCallerSaysAndLeavesNoBinding() throws {
        let queue = try Self.table()
        let sql = "SELECT id FROM t WHERE name >= ? ORDER BY id"
        let (seen, again, expanded) = try queue.write { db -> ([Int64], [Int64], String?) in
            let insert = try FastStatement(db, sql: "INSERT INTO t (name, body) VALUES (?, ?)")
            for n in 1...10 { try insert.run(.text("n\(n)"), .blob([])) }
            let select = try FastStatement(db, sql: sql)
            var seen: [Int64] = []
            try select.step([.text("n")]) { row in
                seen.append(row.integer(0))
                return seen.count < 3
            }
            // Stopped mid-result, the statement still starts over from its first row when stepped again.
            var again: [Int64] = []
            try select.step([.text("n")]) { row in
                again.append(row.integer(0))
                return true
            }
            guard let text = sqlite3_expanded_sql(try db.cachedStatement(sql: sql).sqliteStatement) else { return (seen, again, nil) }
            defer { sqlite3_free(text) }
            return (seen, again, String(cString: text))
        }
        #expect(seen == [1, 2, 3], "no row handed on after the body said stop")
        #expect(again == Array(1...10))
        #expect(expanded == "SELECT id FROM t WHERE name >= NULL ORDER BY id")
    }
}
