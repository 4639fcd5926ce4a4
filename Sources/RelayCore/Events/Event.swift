import RelayJSON

/// One event as read from the Events API: what the relay needs to know of it, and its bytes exactly as received,
/// which are what a webhook gets.
public struct Event: Sendable, Equatable {
    /// The unique event id.
    public var id: String
    /// The event time.
    public var time: Timestamp
    /// The action (`email_click`, `identify`...); empty when the event has none.
    public var action: String
    /// The event time as the event wrote it (for the envelope's `timestamp`).
    public var timeValue: JSONValue
    /// The event object's bytes as the API returned them.
    public var raw: [UInt8]

    /// Wraps decoded parts.
    public init(id: String, time: Timestamp, action: String, timeValue: JSONValue, raw: [UInt8]) {
        self.id = id
        self.time = time
        self.action = action
        self.timeValue = timeValue
        self.raw = raw
    }

    /// The event object, for filters: parsed from ``raw`` each time it is asked for, because only a subscription
    /// with a `where` filter needs it, and reading a page builds nothing of an event but its id, time and action.
    public var fields: JSONObject {
        (try? JSONParser.parse(raw))?.objectValue ?? JSONObject()
    }
}

extension JSONValue {
    /// The value at a dot path: object members by name, array elements by numeric segment.
    public func value(at path: FieldPath) -> JSONValue? {
        var current = self
        for segment in path.segments {
            switch current {
            case .object(let object):
                guard let next = object[segment] else { return nil }
                current = next
            case .array(let elements):
                guard let index = Int(segment), elements.indices.contains(index) else { return nil }
                current = elements[index]
            default:
                return nil
            }
        }
        return current
    }
}
