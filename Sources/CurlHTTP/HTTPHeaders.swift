/// An ordered list of HTTP header fields with case-insensitive lookup.
///
/// Values may be secrets (tokens, signatures), so `description` prints names only.
public struct HTTPHeaders: Sendable, Equatable, CustomStringConvertible, ExpressibleByDictionaryLiteral {
    /// The fields in the order they were added or received.
    public private(set) var fields: [(name: String, value: String)]

    /// Creates an empty set of headers.
    public init() { fields = [] }

    /// Creates headers from name/value pairs, keeping their order.
    public init(_ fields: [(name: String, value: String)]) { self.fields = fields }

    /// Creates headers from a literal, keeping its order.
    public init(dictionaryLiteral elements: (String, String)...) {
        fields = elements.map { (name: $0.0, value: $0.1) }
    }

    /// Appends a field, keeping any earlier field of the same name.
    public mutating func add(name: String, value: String) { fields.append((name, value)) }

    /// Replaces every field of this name with one field.
    public mutating func replaceOrAdd(name: String, value: String) {
        fields.removeAll { $0.name.caseInsensitiveEquals(name) }
        fields.append((name, value))
    }

    /// The first value of the named field, compared without regard to case.
    public subscript(name: String) -> String? {
        fields.first { $0.name.caseInsensitiveEquals(name) }?.value
    }

    public var description: String {
        "[" + fields.map { "\($0.name): <redacted>" }.joined(separator: ", ") + "]"
    }

    public static func == (lhs: HTTPHeaders, rhs: HTTPHeaders) -> Bool {
        lhs.fields.elementsEqual(rhs.fields) { $0.name == $1.name && $0.value == $1.value }
    }
}

extension String {
    /// ASCII case-insensitive equality without allocating: header names are ASCII tokens, and a lookup happens on
    /// every response.
    func caseInsensitiveEquals(_ other: String) -> Bool {
        utf8.elementsEqual(other.utf8) { a, b in
            a == b || (a | 0x20 == b | 0x20 && (a | 0x20) >= UInt8(ascii: "a") && (a | 0x20) <= UInt8(ascii: "z"))
        }
    }

    /// Whether the string starts with `prefix`, ignoring ASCII case.
    func hasCaseInsensitivePrefix(_ prefix: String) -> Bool {
        utf8.count >= prefix.utf8.count && String(decoding: utf8.prefix(prefix.utf8.count), as: UTF8.self).caseInsensitiveEquals(prefix)
    }
}
