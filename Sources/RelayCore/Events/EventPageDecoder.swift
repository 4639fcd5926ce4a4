import RelayJSON

/// Turns an Events API response body into events, accepting every shape docs/configuration.md lists under `response` (or the configured
/// overrides) and keeping each event's bytes exactly as received.
public struct EventPageDecoder: Sendable {
    /// Why an event was skipped; each kind is logged once.
    public enum SkipReason: String, Error, Sendable, Hashable, CaseIterable {
        case notAnObject = "not_an_object"
        case missingID = "missing_id"
        case missingTime = "missing_time"
        case unreadableTime = "unreadable_time"
        /// A time that parses but lies outside ``Timestamp/placeable`` (before 1970 or after year 9999).
        case timeOutOfRange = "time_out_of_range"
    }

    /// The events of one page, and what was skipped.
    public struct Page: Sendable {
        /// Decoded events, in response order.
        public var events: [Event]
        /// How many array elements the page had, events and skipped ones: a full page is judged by this.
        public var elementCount: Int
        /// Skipped elements by reason.
        public var skipped: [SkipReason: Int]
    }

    /// Why a body could not be read at all; the cursor must not move past it.
    public struct DecodingError: Error, Sendable, CustomStringConvertible {
        /// What was wrong.
        public let reason: String
        public var description: String { reason }
    }

    static let idFields = ["eventID", "eventId", "event_id", "messageId", "id"].map { FieldPath($0)! }
    static let timeFields = ["timestamp", "date", "receivedAt", "createdAt"].map { FieldPath($0)! }
    static let actionFields = ["action", "event", "type"].map { FieldPath($0)! }
    static let containerKeys: Set<String> = ["events", "data", "results", "items"]

    private let eventsPointer: [String]?
    private let idFields: [FieldPath]
    private let timeFields: [FieldPath]
    private let actionFields: [FieldPath]
    /// The members of an event that id, time and action are read from; the others are checked but not built.
    private let namingMembers: Set<String>

    /// A decoder for a source's `response` overrides, or for every default shape.
    public init(overrides: ResponseShapeOverrides? = nil) {
        eventsPointer = overrides?.eventsPath.map(Self.pointerTokens)
        idFields = overrides?.idField.flatMap(FieldPath.init).map { [$0] } ?? Self.idFields
        timeFields = overrides?.timestampField.flatMap(FieldPath.init).map { [$0] } ?? Self.timeFields
        actionFields = overrides?.actionField.flatMap(FieldPath.init).map { [$0] } ?? Self.actionFields
        namingMembers = Set((idFields + timeFields + actionFields).compactMap(\.segments.first))
    }

    /// Decodes a whole body; any syntax error anywhere, a truncated body included, fails the whole page.
    public func decode(_ body: [UInt8]) throws(DecodingError) -> Page {
        let result: Result<Page, DecodingError> = body.withUnsafeBytes { buffer in
            var parser = JSONParser(buffer)
            var page = Page(events: [], elementCount: 0, skipped: [:])
            do {
                try locateEvents(&parser, buffer: buffer, page: &page)
                try parser.finish()
                return .success(page)
            } catch let error as JSONSyntaxError {
                return .failure(DecodingError(reason: "response is not valid JSON: \(error)"))
            } catch let error as DecodingError {
                return .failure(error)
            } catch {
                return .failure(DecodingError(reason: "\(error)"))
            }
        }
        return try result.get()
    }

    // MARK: - Finding the array

    private func locateEvents(_ parser: inout JSONParser, buffer: UnsafeRawBufferPointer, page: inout Page) throws {
        if let pointer = eventsPointer {
            try follow(pointer[...], &parser, buffer: buffer, page: &page)
            return
        }
        switch parser.peekKind() {
        case .array:
            try readEvents(&parser, buffer: buffer, elasticsearch: false, page: &page)
        case .object:
            var found = false
            try parser.beginObject()
            while let key = try parser.nextKey() {
                if !found, Self.containerKeys.contains(key), parser.peekKind() == .array {
                    try readEvents(&parser, buffer: buffer, elasticsearch: false, page: &page)
                    found = true
                } else if !found, key == "hits", parser.peekKind() == .object {
                    found = try readElasticsearchHits(&parser, buffer: buffer, page: &page)
                } else {
                    _ = try parser.parseValue()
                }
            }
            guard found else {
                throw DecodingError(
                    reason: "no array of events: expected a top-level array, an events, data, results or items member, or hits.hits")
            }
        default:
            throw DecodingError(reason: "response is neither an array nor an object")
        }
    }

    /// `{"hits": {"hits": [...]}}`; true when the inner array was there.
    private func readElasticsearchHits(_ parser: inout JSONParser, buffer: UnsafeRawBufferPointer, page: inout Page) throws -> Bool {
        var found = false
        try parser.beginObject()
        while let key = try parser.nextKey() {
            if key == "hits", !found, parser.peekKind() == .array {
                try readEvents(&parser, buffer: buffer, elasticsearch: true, page: &page)
                found = true
            } else {
                _ = try parser.parseValue()
            }
        }
        return found
    }

    private func follow(_ tokens: ArraySlice<String>, _ parser: inout JSONParser, buffer: UnsafeRawBufferPointer, page: inout Page) throws {
        guard let token = tokens.first else {
            guard parser.peekKind() == .array else {
                throw DecodingError(reason: "response.eventsPath does not lead to an array")
            }
            try readEvents(&parser, buffer: buffer, elasticsearch: false, page: &page)
            return
        }
        var found = false
        switch parser.peekKind() {
        case .object:
            try parser.beginObject()
            while let key = try parser.nextKey() {
                if key == token, !found {
                    try follow(tokens.dropFirst(), &parser, buffer: buffer, page: &page)
                    found = true
                } else {
                    _ = try parser.parseValue()
                }
            }
        case .array:
            try parser.beginArray()
            var index = 0
            while try parser.nextElement() {
                if String(index) == token, !found {
                    try follow(tokens.dropFirst(), &parser, buffer: buffer, page: &page)
                    found = true
                } else {
                    _ = try parser.parseValue()
                }
                index += 1
            }
        default:
            _ = try parser.parseValue()
        }
        guard found else { throw DecodingError(reason: "response.eventsPath does not lead to an array") }
    }

    // MARK: - Events

    private func readEvents(_ parser: inout JSONParser, buffer: UnsafeRawBufferPointer, elasticsearch: Bool, page: inout Page) throws {
        try parser.beginArray()
        while try parser.nextElement() {
            page.elementCount += 1
            guard let element = try elasticsearch ? hit(&parser, buffer: buffer) : plainElement(&parser) else {
                page.skipped[.notAnObject, default: 0] += 1
                continue
            }
            switch event(element.fields, raw: Array(buffer[element.raw]), fallbackID: element.fallbackID) {
            case .success(let event): page.events.append(event)
            case .failure(let reason): page.skipped[reason, default: 0] += 1
            }
        }
    }

    /// What an array element gives to read an event from: the members to read, the event's bytes, and the id to
    /// use when none of the id fields has one.
    private typealias Element = (fields: JSONObject, raw: Range<Int>, fallbackID: String?)

    /// An element of a plain array, nil when it is not an object. Only the members that name an event are built
    /// (in document order, duplicates kept, so that the last of a repeated key counts as everywhere else); the rest
    /// are checked and skipped.
    private func plainElement(_ parser: inout JSONParser) throws -> Element? {
        guard parser.peekKind() == .object else {
            _ = try parser.skipValue()
            return nil
        }
        let start = parser.offset
        var members: [(key: String, value: JSONValue)] = []
        try parser.beginObject()
        while let key = try parser.nextKey() {
            if namingMembers.contains(key) {
                members.append((key, try parser.parseValue()))
            } else {
                _ = try parser.skipValue()
            }
        }
        return (JSONObject(members), start..<parser.offset, nil)
    }

    /// An Elasticsearch hit, nil when it is not an object: the event is its `_source` when that is an object (else
    /// the hit itself), and `_id` is the fallback id. Hits are rare, so they are parsed whole.
    private func hit(_ parser: inout JSONParser, buffer: UnsafeRawBufferPointer) throws -> Element? {
        let (value, span) = try parser.parseValueWithSpan()
        guard let hit = value.objectValue else { return nil }
        let fallbackID = Self.idText(hit["_id"])
        guard let source = hit["_source"]?.objectValue else { return (hit, span, fallbackID) }
        // The event is _source: find its bytes inside the hit.
        return (source, try Self.span(ofMember: "_source", in: buffer, within: span), fallbackID)
    }

    private func event(_ fields: JSONObject, raw: [UInt8], fallbackID: String?) -> Result<Event, SkipReason> {
        let root = JSONValue.object(fields)
        guard let id = idFields.lazy.compactMap({ Self.idText(root.value(at: $0)) }).first ?? fallbackID else {
            return .failure(.missingID)
        }
        guard let timeValue = timeFields.lazy.compactMap({ path -> JSONValue? in
            let value = root.value(at: path)
            return value == .null ? nil : value
        }).first else { return .failure(.missingTime) }
        guard let time = Self.time(timeValue) else { return .failure(.unreadableTime) }
        guard time.isPlaceable else { return .failure(.timeOutOfRange) }
        let action = actionFields.lazy.compactMap { root.value(at: $0)?.stringValue }.first ?? ""
        return .success(Event(id: id, time: time, action: action, timeValue: timeValue, raw: raw))
    }

    static func idText(_ value: JSONValue?) -> String? {
        switch value {
        case .string(let text) where !text.isEmpty: return text
        case .number(let number): return number.text
        default: return nil
        }
    }

    static func time(_ value: JSONValue) -> Timestamp? {
        switch value {
        case .string(let text): return Timestamp(iso8601: text)
        case .number(let number):
            if let ms = number.integer { return Timestamp(millisecondsSinceEpoch: Int64(ms)) }
            // Fractions and exponents: only a finite value that fits Int64 converts; `1e19` would trap `Int64(_:)`.
            let ms = number.double.rounded(.down)
            guard ms.isFinite, ms >= -9.2e18, ms <= 9.2e18 else { return Timestamp(millisecondsSinceEpoch: Int64.max) }
            return Timestamp(millisecondsSinceEpoch: Int64(ms))
        default: return nil
        }
    }

    /// The byte range of a member's value inside an object that spans `range`.
    private static func span(ofMember name: String, in buffer: UnsafeRawBufferPointer, within range: Range<Int>) throws -> Range<Int> {
        var parser = JSONParser(UnsafeRawBufferPointer(rebasing: buffer[range]))
        try parser.beginObject()
        while let key = try parser.nextKey() {
            let (_, span) = try parser.parseValueWithSpan()
            if key == name { return (span.lowerBound + range.lowerBound)..<(span.upperBound + range.lowerBound) }
        }
        throw DecodingError(reason: "member \(name) vanished")
    }

    /// RFC 6901 tokens of a JSON pointer.
    static func pointerTokens(_ pointer: String) -> [String] {
        guard !pointer.isEmpty else { return [] }
        return pointer.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map {
            $0.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
        }
    }
}
