/// A parsed JSON value. Objects keep their members in document order, duplicates included, so that a validator
/// can report them; numbers keep their source text, so that nothing is lost in a round trip.
public enum JSONValue: Sendable, Equatable, CustomStringConvertible {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// The JSON type's name as a user would say it: `null`, `a boolean`, `a number`, ...
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    /// The string, if this is one.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The object, if this is one.
    public var objectValue: JSONObject? {
        if case .object(let o) = self { return o }
        return nil
    }

    /// The elements, if this is an array.
    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// Compact JSON text for this value.
    public var description: String {
        var out = ""
        JSONWriter.write(self, to: &out)
        return out
    }
}

/// A JSON number: its text as written, and its value.
public struct JSONNumber: Sendable, Hashable, CustomStringConvertible {
    /// The number as it appeared in the document.
    public let text: String
    /// Its value as a double (large integers lose precision past 2^53).
    public let double: Double
    /// Its value, when the text is an integer that fits an `Int`.
    public let integer: Int?

    /// Wraps number text already checked against JSON's grammar.
    public init(text: String) {
        self.text = text
        self.integer = Int(text)
        self.double = Double(text) ?? .nan
    }

    /// A number from an integer.
    public init(_ value: Int) { self.init(text: String(value)) }

    public var description: String { text }

    /// Equal by value, so that `1` equals `1.0`.
    public static func == (lhs: JSONNumber, rhs: JSONNumber) -> Bool {
        if let l = lhs.integer, let r = rhs.integer { return l == r }
        return lhs.double == rhs.double
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(double) }
}

/// A JSON object's members in document order.
public struct JSONObject: Sendable, Equatable {
    /// Every member, duplicates included.
    public var members: [(key: String, value: JSONValue)]

    /// Wraps members as they are.
    public init(_ members: [(key: String, value: JSONValue)] = []) { self.members = members }

    /// The value of the last member with this key, as most JSON readers resolve duplicates.
    public subscript(key: String) -> JSONValue? {
        members.last { $0.key == key }?.value
    }

    /// The keys in document order.
    public var keys: [String] { members.map(\.key) }

    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        lhs.members.elementsEqual(rhs.members) { $0.key == $1.key && $0.value == $1.value }
    }
}
