/// Pull-style reading of a document's structure, for finding one array inside a response and taking each element
/// with the exact bytes it spans, without building the rest.
extension JSONParser {
    /// The kind of the next value, without consuming it; nil at the end of input.
    public mutating func peekKind() -> JSONKind? {
        skipWhitespaceForStructure()
        guard offset < bytes.count else { return nil }
        switch bytes[offset] {
        case UInt8(ascii: "{"): return .object
        case UInt8(ascii: "["): return .array
        default: return .scalar
        }
    }

    /// Consumes `{`; then call ``nextKey()`` until it returns nil.
    public mutating func beginObject() throws(JSONSyntaxError) {
        try begin(UInt8(ascii: "{"), "an object")
    }

    /// The next member's key, positioned at its value; nil (and the object closed) at `}`.
    public mutating func nextKey() throws(JSONSyntaxError) -> String? {
        skipWhitespaceForStructure()
        if peekByte() == UInt8(ascii: "}") {
            offset += 1
            containers.removeLast()
            leaveContainer()
            return nil
        }
        try separateFromPrevious("'}'")
        skipWhitespaceForStructure()
        guard peekByte() == UInt8(ascii: "\"") else { throw syntaxError("expected a member name in double quotes") }
        guard case .string(let key) = try parseValue() else { throw syntaxError("expected a member name") }
        skipWhitespaceForStructure()
        guard peekByte() == UInt8(ascii: ":") else { throw syntaxError("expected ':' after a member name") }
        offset += 1
        return key
    }

    /// Consumes `[`; then call ``nextElement()`` before each element.
    public mutating func beginArray() throws(JSONSyntaxError) {
        try begin(UInt8(ascii: "["), "an array")
    }

    /// True when another element follows (positioned at it); false (and the array closed) at `]`.
    public mutating func nextElement() throws(JSONSyntaxError) -> Bool {
        skipWhitespaceForStructure()
        if peekByte() == UInt8(ascii: "]") {
            offset += 1
            containers.removeLast()
            leaveContainer()
            return false
        }
        try separateFromPrevious("']'")
        return true
    }

    /// Parses the next value and returns it with the byte range it spans.
    public mutating func parseValueWithSpan() throws(JSONSyntaxError) -> (JSONValue, Range<Int>) {
        skipWhitespaceForStructure()
        let start = offset
        let value = try parseValue()
        return (value, start..<offset)
    }

    /// Checks that the document ends here, but for white space.
    public mutating func finish() throws(JSONSyntaxError) {
        skipWhitespaceForStructure()
        guard containers.isEmpty else { throw syntaxError("unexpected end of input inside a container") }
        guard offset == bytes.count else { throw syntaxError("unexpected data after the JSON value") }
    }

    private mutating func begin(_ opener: UInt8, _ name: String) throws(JSONSyntaxError) {
        skipWhitespaceForStructure()
        guard peekByte() == opener else {
            throw syntaxError(offset < bytes.count ? "expected \(name)" : "unexpected end of input, expected \(name)")
        }
        try enterContainer()
        offset += 1
        containers.append(true)
    }

    private mutating func separateFromPrevious(_ closer: String) throws(JSONSyntaxError) {
        guard !containers.isEmpty else { throw syntaxError("not inside a container") }
        if containers[containers.count - 1] {
            containers[containers.count - 1] = false
            guard offset < bytes.count else { throw syntaxError("unexpected end of input") }
            return
        }
        guard peekByte() == UInt8(ascii: ",") else {
            throw syntaxError(offset < bytes.count ? "expected ',' or \(closer)" : "unexpected end of input")
        }
        offset += 1
    }

    private func peekByte() -> UInt8? { offset < bytes.count ? bytes[offset] : nil }
}

/// What a JSON value is, as far as structure goes.
public enum JSONKind: Sendable, Equatable {
    case object, array, scalar
}
