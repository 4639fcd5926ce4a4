/// A strict JSON (RFC 8259) parser over bytes.
///
/// Strict because its input comes from outside: a config file or an API response. Nesting is bounded so that a
/// hostile document cannot overflow the stack.
public struct JSONParser {
    /// Deeper nesting than this is refused.
    public static let maximumDepth = 512

    /// Parses a whole document: one value, optionally surrounded by white space.
    public static func parse(_ bytes: some Collection<UInt8>) throws(JSONSyntaxError) -> JSONValue {
        let result: Result<JSONValue, JSONSyntaxError> = Array(bytes).withUnsafeBytes { buffer in
            var parser = JSONParser(buffer)
            return Result { () throws(JSONSyntaxError) -> JSONValue in try parser.parseDocument() }
        }
        return try result.get()
    }

    /// Parses a whole document given as text.
    public static func parse(_ text: String) throws(JSONSyntaxError) -> JSONValue {
        try parse(Array(text.utf8))
    }

    let bytes: UnsafeRawBufferPointer
    /// The offset of the next unread byte.
    public internal(set) var offset = 0
    private var depth = 0
    /// For structural reading: one entry per open container, true until its first member or element.
    var containers: [Bool] = []

    /// A parser positioned at the start of `bytes`, which must outlive it.
    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// Parses one value and checks that only white space follows.
    public mutating func parseDocument() throws(JSONSyntaxError) -> JSONValue {
        skipWhitespace()
        let value = try parseValue()
        skipWhitespace()
        if offset < bytes.count { throw error("unexpected \(describe(bytes[offset])) after the JSON value") }
        return value
    }

    /// Parses the value starting at the next non-space byte.
    public mutating func parseValue() throws(JSONSyntaxError) -> JSONValue {
        skipWhitespace()
        guard offset < bytes.count else { throw error("unexpected end of input, expected a value") }
        switch bytes[offset] {
        case UInt8(ascii: "{"): return .object(try parseObject())
        case UInt8(ascii: "["): return .array(try parseArray())
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        case let byte: throw error("unexpected \(describe(byte)), expected a value")
        }
    }

    /// Skips a value without building it, returning the byte range it spans. It accepts exactly what
    /// ``parseValue()`` accepts, with the same errors: a skipped member of an event still makes a bad page fail whole.
    public mutating func skipValue() throws(JSONSyntaxError) -> Range<Int> {
        skipWhitespace()
        let start = offset
        try skipAnyValue()
        return start..<offset
    }

    // MARK: - Containers

    mutating func enterContainer() throws(JSONSyntaxError) { try enter() }
    mutating func leaveContainer() { depth -= 1 }
    mutating func skipWhitespaceForStructure() { skipWhitespace() }
    func syntaxError(_ reason: String) -> JSONSyntaxError { error(reason) }

    private mutating func enter() throws(JSONSyntaxError) {
        depth += 1
        if depth > Self.maximumDepth { throw error("nesting deeper than \(Self.maximumDepth) levels") }
    }

    private mutating func parseObject() throws(JSONSyntaxError) -> JSONObject {
        try enter()
        defer { depth -= 1 }
        offset += 1
        var members: [(key: String, value: JSONValue)] = []
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            offset += 1
            return JSONObject(members)
        }
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else { throw error("expected a member name in double quotes") }
            let key = try parseString()
            skipWhitespace()
            guard peek() == UInt8(ascii: ":") else { throw error("expected ':' after a member name") }
            offset += 1
            members.append((key, try parseValue()))
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): offset += 1
            case UInt8(ascii: "}"): offset += 1; return JSONObject(members)
            default: throw error("expected ',' or '}' in an object")
            }
        }
    }

    private mutating func parseArray() throws(JSONSyntaxError) -> [JSONValue] {
        try enter()
        defer { depth -= 1 }
        offset += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if peek() == UInt8(ascii: "]") {
            offset += 1
            return elements
        }
        while true {
            elements.append(try parseValue())
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): offset += 1
            case UInt8(ascii: "]"): offset += 1; return elements
            default: throw error("expected ',' or ']' in an array")
            }
        }
    }

    // MARK: - Skipping

    private mutating func skipAnyValue() throws(JSONSyntaxError) {
        skipWhitespace()
        guard offset < bytes.count else { throw error("unexpected end of input, expected a value") }
        switch bytes[offset] {
        case UInt8(ascii: "{"): try skipObject()
        case UInt8(ascii: "["): try skipArray()
        case UInt8(ascii: "\""): try skipString()
        case UInt8(ascii: "t"): try expectLiteral("true")
        case UInt8(ascii: "f"): try expectLiteral("false")
        case UInt8(ascii: "n"): try expectLiteral("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): _ = try scanNumber()
        case let byte: throw error("unexpected \(describe(byte)), expected a value")
        }
    }

    private mutating func skipObject() throws(JSONSyntaxError) {
        try enter()
        defer { depth -= 1 }
        offset += 1
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            offset += 1
            return
        }
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else { throw error("expected a member name in double quotes") }
            try skipString()
            skipWhitespace()
            guard peek() == UInt8(ascii: ":") else { throw error("expected ':' after a member name") }
            offset += 1
            try skipAnyValue()
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): offset += 1
            case UInt8(ascii: "}"): offset += 1; return
            default: throw error("expected ',' or '}' in an object")
            }
        }
    }

    private mutating func skipArray() throws(JSONSyntaxError) {
        try enter()
        defer { depth -= 1 }
        offset += 1
        skipWhitespace()
        if peek() == UInt8(ascii: "]") {
            offset += 1
            return
        }
        while true {
            try skipAnyValue()
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): offset += 1
            case UInt8(ascii: "]"): offset += 1; return
            default: throw error("expected ',' or ']' in an array")
            }
        }
    }

    /// Checks a string as ``parseString()`` does, without decoding it: the runs of bytes between escapes must each be
    /// UTF-8 (an escape always decodes to whole characters, so the string is UTF-8 exactly when every run is), and,
    /// as there, bad UTF-8 is reported only at the closing quote, after any other error.
    private mutating func skipString() throws(JSONSyntaxError) {
        offset += 1
        let start = offset
        var run = offset
        var runIsASCII = true
        var validUTF8 = true
        while offset < bytes.count {
            let byte = bytes[offset]
            switch byte {
            case UInt8(ascii: "\""):
                if !runIsASCII, validUTF8 { validUTF8 = isUTF8(run..<offset) }
                guard validUTF8 else { throw error("invalid UTF-8 in a string", at: start) }
                offset += 1
                return
            case UInt8(ascii: "\\"):
                if !runIsASCII, validUTF8 { validUTF8 = isUTF8(run..<offset) }
                runIsASCII = true
                offset += 1
                guard offset < bytes.count else { throw error("unterminated string", at: start - 1) }
                _ = try parseEscape()
                run = offset
            default:
                if byte < 0x20 { throw error("unescaped control character in a string") }
                if byte >= 0x80 { runIsASCII = false }
                offset += 1
            }
        }
        throw error("unterminated string", at: start - 1)
    }

    private func isUTF8(_ range: Range<Int>) -> Bool {
        String(validating: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self) != nil
    }

    // MARK: - Scalars

    private mutating func parseString() throws(JSONSyntaxError) -> String {
        offset += 1
        let start = offset
        // Fast path: no escapes.
        while offset < bytes.count {
            let byte = bytes[offset]
            if byte == UInt8(ascii: "\"") {
                let text = try decodeUTF8(start..<offset)
                offset += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw error("unescaped control character in a string") }
            offset += 1
        }
        var scalars = Array(bytes[start..<offset])
        while offset < bytes.count {
            let byte = bytes[offset]
            switch byte {
            case UInt8(ascii: "\""):
                offset += 1
                let decoded = String(validating: scalars, as: UTF8.self)
                guard let decoded else { throw error("invalid UTF-8 in a string", at: start) }
                return decoded
            case UInt8(ascii: "\\"):
                offset += 1
                guard offset < bytes.count else { break }
                switch try parseEscape() {
                case .byte(let byte): scalars.append(byte)
                case .unicode(let utf8): scalars.append(contentsOf: utf8)
                }
            default:
                if byte < 0x20 { throw error("unescaped control character in a string") }
                scalars.append(byte)
                offset += 1
            }
        }
        throw error("unterminated string", at: start - 1)
    }

    /// What an escape in a string stands for: one byte (`\n`, `\"`...), or the UTF-8 of a `\u` escape.
    private enum Escape {
        case byte(UInt8)
        case unicode([UInt8])
    }

    /// Reads the escape whose backslash is just before `offset`, which must be inside the input.
    private mutating func parseEscape() throws(JSONSyntaxError) -> Escape {
        let escape = bytes[offset]
        offset += 1
        switch escape {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): return .byte(escape)
        case UInt8(ascii: "b"): return .byte(0x08)
        case UInt8(ascii: "f"): return .byte(0x0C)
        case UInt8(ascii: "n"): return .byte(0x0A)
        case UInt8(ascii: "r"): return .byte(0x0D)
        case UInt8(ascii: "t"): return .byte(0x09)
        case UInt8(ascii: "u"): return .unicode(try parseUnicodeEscape())
        default: throw error("invalid escape \\\(describe(escape, quoted: false)) in a string", at: offset - 2)
        }
    }

    private mutating func parseUnicodeEscape() throws(JSONSyntaxError) -> [UInt8] {
        let first = try parseHex4()
        var scalarValue = first
        if (0xD800..<0xDC00).contains(first) {
            guard offset + 1 < bytes.count, bytes[offset] == UInt8(ascii: "\\"), bytes[offset + 1] == UInt8(ascii: "u")
            else { throw error("lone UTF-16 surrogate in \\u escape") }
            offset += 2
            let second = try parseHex4()
            guard (0xDC00..<0xE000).contains(second) else { throw error("lone UTF-16 surrogate in \\u escape") }
            scalarValue = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else if (0xDC00..<0xE000).contains(first) {
            throw error("lone UTF-16 surrogate in \\u escape")
        }
        guard let scalar = Unicode.Scalar(scalarValue) else { throw error("invalid \\u escape") }
        return Array(String(Character(scalar)).utf8)
    }

    private mutating func parseHex4() throws(JSONSyntaxError) -> UInt32 {
        guard offset + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[offset]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw error("invalid hex digit in \\u escape")
            }
            value = value << 4 | UInt32(digit)
            offset += 1
        }
        return value
    }

    private mutating func parseNumber() throws(JSONSyntaxError) -> JSONNumber {
        let range = try scanNumber()
        return JSONNumber(text: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self))
    }

    /// Reads a number's bytes, checking its grammar.
    private mutating func scanNumber() throws(JSONSyntaxError) -> Range<Int> {
        let start = offset
        if peek() == UInt8(ascii: "-") { offset += 1 }
        guard let first = peek(), isDigit(first) else { throw error("expected a digit") }
        offset += 1
        if first == UInt8(ascii: "0"), let next = peek(), isDigit(next) {
            throw error("leading zeros are not allowed in numbers")
        }
        skipDigits()
        if peek() == UInt8(ascii: ".") {
            offset += 1
            guard let digit = peek(), isDigit(digit) else { throw error("expected a digit after '.'") }
            skipDigits()
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            offset += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { offset += 1 }
            guard let digit = peek(), isDigit(digit) else { throw error("expected a digit in the exponent") }
            skipDigits()
        }
        return start..<offset
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(JSONSyntaxError) {
        let count = literal.utf8CodeUnitCount
        let matches = offset + count <= bytes.count
            && (0..<count).allSatisfy { bytes[offset + $0] == literal.utf8Start[$0] }
        guard matches else { throw error("unexpected \(describe(bytes[offset])), expected a value") }
        offset += count
    }

    // MARK: - Helpers

    private func decodeUTF8(_ range: Range<Int>) throws(JSONSyntaxError) -> String {
        let slice = UnsafeRawBufferPointer(rebasing: bytes[range])
        // Most keys and values are ASCII, which needs no validation; String(validating:) costs a generic lookup.
        if !slice.contains(where: { $0 >= 0x80 }) { return String(decoding: slice, as: UTF8.self) }
        guard let text = String(validating: slice, as: UTF8.self) else {
            throw error("invalid UTF-8 in a string", at: range.lowerBound)
        }
        return text
    }

    private func peek() -> UInt8? { offset < bytes.count ? bytes[offset] : nil }

    private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private mutating func skipDigits() {
        while let byte = peek(), isDigit(byte) { offset += 1 }
    }

    private mutating func skipWhitespace() {
        while let byte = peek(), byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { offset += 1 }
    }

    private func describe(_ byte: UInt8, quoted: Bool = true) -> String {
        let text = byte >= 0x20 && byte < 0x7F ? String(UnicodeScalar(byte)) : "byte 0x" + String(byte, radix: 16)
        return quoted && byte >= 0x20 && byte < 0x7F ? "'\(text)'" : text
    }

    private func error(_ reason: String, at position: Int? = nil) -> JSONSyntaxError {
        JSONSyntaxError(reason: reason, offset: position ?? offset, in: bytes)
    }
}
