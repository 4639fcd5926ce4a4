import IntilerySimulator
import RelayCore
import RelayJSON
import Testing

/// No page from the API may trap the relay (docs/architecture.md, Invariants: "No input traps"). Random and mutated
/// bodies go through the page decoder; random times through the timestamp parser and formatter. Seeded, so that a
/// failure repeats.
@Suite struct DecoderFuzzTests {
    static let seeds = [
        #"[{"eventID":"a","timestamp":"2024-05-01T00:00:00.000Z","action":"x","properties":{"n":1.5}},{"id":7,"date":1714521600001,"type":"y"}]"#,
        #"{"events":[{"event_id":"e","receivedAt":1714521600000,"event":"click"}],"total":1}"#,
        #"{"took":1,"hits":{"total":2,"hits":[{"_id":"h1","_source":{"timestamp":"2024-05-01T00:00:00+02:00"}},{"_id":"h2","_source":{"createdAt":"2024-05-01 00:00:01.5Z"}}]}}"#,
        #"{"data":[{"messageId":"m","createdAt":"2024-05-01","type":"identify","context":{"ip":"1.2.3.4"}}]}"#,
    ]

    /// Tokens that have broken parsers before: absurd numbers, impossible dates, stray syntax, bad escapes.
    static let dictionary = [
        "1e19", "-1e19", "1e400", "-1e400", "-0", "0.0000001", "9223372036854775807", "9223372036854775808",
        "-9223372036854775809", "99999999999999999999999", "1.5e3", "\"", "\\", "\\u0000", "\\ud800", "{", "}", "[", "]",
        ",", ":", "null", "true", #""9999-12-31T23:59:59.999Z""#, #""10000-01-01""#, #""0000-00-00""#,
        #""2024-02-30""#, #""2024-05-01T25:00:00Z""#, #""2024-05-01T00:00:00+99:99""#, #""2024-05-01T00:00:60.9999999999Z""#,
        #""-2024-05-01""#, #""NaN""#, #""Infinity""#, #"{"timestamp":1e19,"id":"x"}"#, #"{"id":"y","timestamp":-1}"#,
    ]

    /// Valid JSON values, absurd ones among them, for pages whose syntax is right and whose fields are not.
    static let values = [
        "1e19", "-1e19", "1e400", "-0", "0", "1714521600000", "1714521600000.5", "9223372036854775807",
        "-9223372036854775808", "253402300799999", "253402300800000", "null", "true", "false", "[]", "{}", #""""#,
        #""a""#, #""2024-05-01T00:00:00Z""#, #""9999-12-31T23:59:59.999Z""#, #""0000-01-01""#, #""0000-00-00""#,
        #""2024-02-29T23:59:60.5+14:00""#, #""2024-05-01T00:00:00-23:59""#, #"{"nested": 1e19}"#, #"[1e19]"#,
    ]

    static func structuredPage(_ random: inout SeededRandom) -> [UInt8] {
        func value() -> String { values[Int(random.next() % UInt64(values.count))] }
        let fields = ["eventID", "id", "_id", "timestamp", "date", "receivedAt", "createdAt", "action", "type", "event"]
        let events = (0..<Int(random.next() % 5)).map { _ in
            "{" + (0..<Int(random.next() % 5)).map { _ in "\"\(fields[Int(random.next() % UInt64(fields.count))])\": \(value())" }
                .joined(separator: ",") + "}"
        }
        return Array(("[" + events.joined(separator: ",") + "]").utf8)
    }

    static func mutate(_ bytes: [UInt8], _ random: inout SeededRandom) -> [UInt8] {
        var bytes = bytes
        for _ in 0..<(1 + Int(random.next() % 2)) {
            let position = bytes.isEmpty ? 0 : Int(random.next() % UInt64(bytes.count))
            switch random.next() % 6 {
            case 0 where !bytes.isEmpty:
                bytes[position] ^= UInt8(truncatingIfNeeded: random.next() | 1)
            case 1:
                let token = dictionary[Int(random.next() % UInt64(dictionary.count))]
                bytes.insert(contentsOf: Array(token.utf8), at: position)
            case 2 where !bytes.isEmpty:
                let length = min(Int(random.next() % 16) + 1, bytes.count - position)
                bytes.removeSubrange(position..<position + length)
            case 3 where !bytes.isEmpty:
                let length = min(Int(random.next() % 32) + 1, bytes.count - position)
                bytes.insert(contentsOf: Array(bytes[position..<position + length]), at: position)
            case 4:
                bytes = Array(bytes.prefix(position))
            default:
                // Replace a number-ish or string-ish run with a dictionary token.
                let token = dictionary[Int(random.next() % UInt64(dictionary.count))]
                let length = min(Int(random.next() % 8), bytes.count - position)
                bytes.replaceSubrange(position..<position + length, with: Array(token.utf8))
            }
        }
        return bytes
    }

    @Test func mutatedAndRandomPagesNeverTrapAndNeverYieldAnUnplaceableTime() {
        var random = SeededRandom(seed: 2026)
        let decoders = [
            EventPageDecoder(),
            EventPageDecoder(overrides: ResponseShapeOverrides(eventsPath: "/events", idField: "event_id", timestampField: "receivedAt")),
        ]
        var decoded = 0
        var rejected = 0
        for iteration in 0..<40_000 {
            let body: [UInt8]
            if iteration % 3 == 1 {
                body = Self.structuredPage(&random)
            } else if iteration % 10 == 0 {
                // Pure noise from JSON's alphabet.
                let alphabet = Array(#"{}[]:,"0123456789.eE+-tfnrul \abc"#.utf8)
                body = (0..<Int(random.next() % 200)).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] }
            } else {
                body = Self.mutate(Array(Self.seeds[iteration % Self.seeds.count].utf8), &random)
            }
            do {
                let page = try decoders[iteration % 2].decode(body)
                decoded += 1
                #expect(page.events.allSatisfy { $0.time.isPlaceable && !$0.id.isEmpty })
                #expect(page.events.count + page.skipped.values.reduce(0, +) == page.elementCount)
            } catch {
                rejected += 1
            }
        }
        // Both paths were exercised: the fuzzing reached the event code, not just the syntax errors.
        #expect(decoded > 4_000 && rejected > 4_000, "decoded \(decoded), rejected \(rejected)")
    }

    /// The decoder builds only the members naming an event and checks the rest without building it. Against a
    /// full parse, on the same mutated pages: a page is refused exactly when it is not JSON, and each event's id,
    /// time and action are what its whole object, parsed, says.
    @Test func readingOnlyTheNamingMembersDecidesAsAFullParse() throws {
        var random = SeededRandom(seed: 2027)
        let ids = ["eventID", "eventId", "event_id", "messageId", "id"].map { FieldPath($0)! }
        let times = ["timestamp", "date", "receivedAt", "createdAt"].map { FieldPath($0)! }
        let actions = ["action", "event", "type"].map { FieldPath($0)! }
        var compared = 0
        for iteration in 0..<20_000 {
            let body = iteration % 2 == 0 ? Self.structuredPage(&random) : Self.mutate(Array(Self.seeds[0].utf8), &random)
            let parsed = try? JSONParser.parse(body)
            let page = try? EventPageDecoder().decode(body)
            if parsed == nil { #expect(page == nil, "not JSON, yet read: \(String(decoding: body, as: UTF8.self))") }
            guard parsed?.arrayValue != nil else { continue }
            let events = try #require(page, "a JSON array refused: \(String(decoding: body, as: UTF8.self))")
            for event in events.events {
                let object = JSONValue.object(event.fields)
                let id = ids.lazy.compactMap { path -> String? in
                    switch object.value(at: path) {
                    case .string(let text) where !text.isEmpty: return text
                    case .number(let number): return number.text
                    default: return nil
                    }
                }.first
                #expect(event.id == id)
                #expect(event.timeValue == times.lazy.compactMap { object.value(at: $0) }.first { $0 != .null })
                #expect(event.action == actions.lazy.compactMap { object.value(at: $0)?.stringValue }.first ?? "")
                compared += 1
            }
        }
        #expect(compared > 2_000, "compared \(compared)")
    }

    @Test func anyTimeFormatsWithoutTrappingAndPlaceableOnesRoundTrip() {
        var random = SeededRandom(seed: 9)
        let edges: [Int64] = [.min, .max, .min + 1, .max - 1, -1, 0, Timestamp.placeable.upperBound, Timestamp.placeable.upperBound + 1]
        for ms in edges + (0..<20_000).map({ _ in Int64(bitPattern: random.next()) }) {
            let time = Timestamp(millisecondsSinceEpoch: ms)
            let text = time.iso8601
            _ = time.advanced(by: .seconds(Int64.max / 2))
            _ = time.advanced(by: .seconds(Int64.min / 2))
            if time.isPlaceable { #expect(Timestamp(iso8601: text) == time, "\(ms) → \(text)") }
        }
        let alphabet = Array("0123456789-:T.Z+ tz,".utf8)
        for _ in 0..<20_000 {
            let text = String(decoding: (0..<Int(random.next() % 40)).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] }, as: UTF8.self)
            if let time = Timestamp(iso8601: text) { #expect(time.isPlaceable || time.millisecondsSinceEpoch < 0) }
        }
    }
}
