import RelayJSON

/// A subscription's `where`: a tree of conditions on event fields.
public indirect enum EventFilter: Sendable, Equatable {
    /// Every condition holds (true when empty).
    case all([EventFilter])
    /// At least one condition holds (false when empty).
    case any([EventFilter])
    /// The condition does not hold.
    case not(EventFilter)
    /// A comparison of the value at a path.
    case condition(FieldPath, FilterOperator, JSONValue)
}

/// The comparisons a `where` leaf can make.
public enum FilterOperator: String, Sendable, Equatable, CaseIterable {
    case eq, ne, `in`, nin, gt, gte, lt, lte, exists, contains, prefix
}

/// A dot-separated path into an event, such as `properties.items.0.sku`; a numeric segment indexes an array.
public struct FieldPath: Sendable, Hashable, CustomStringConvertible {
    /// The segments between the dots.
    public let segments: [String]

    /// Splits a dot path; nil when it is empty or has an empty segment.
    public init?(_ text: String) {
        let segments = text.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard !text.isEmpty, !segments.contains(where: \.isEmpty) else { return nil }
        self.segments = segments
    }

    public var description: String { segments.joined(separator: ".") }
}
