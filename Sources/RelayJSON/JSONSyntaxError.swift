/// Why a document is not JSON, and where: line and column count from 1, columns in characters.
public struct JSONSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The line of the offending character.
    public let line: Int
    /// The column of the offending character.
    public let column: Int
    /// The byte offset of the offending character.
    public let offset: Int
    /// What was wrong there.
    public let reason: String

    public var description: String { "line \(line), column \(column): \(reason)" }

    init(reason: String, offset: Int, in bytes: UnsafeRawBufferPointer) {
        var line = 1
        var lineStart = 0
        let end = min(offset, bytes.count)
        for index in 0..<end where bytes[index] == UInt8(ascii: "\n") {
            line += 1
            lineStart = index + 1
        }
        // Counts characters, not bytes: continuation bytes of multi-byte UTF-8 do not start a column.
        var column = 1
        for index in lineStart..<end where bytes[index] & 0xC0 != 0x80 { column += 1 }
        self.line = line
        self.column = column
        self.offset = offset
        self.reason = reason
    }
}
