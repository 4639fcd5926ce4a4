import RelayJSON
import Testing

@Suite struct JSONParserTests {
    @Test func parsesEveryKindOfValueInOrder() throws {
        let value = try JSONParser.parse(#" {"b": [1, -2.5e3, true, false, null], "a": "x\"\u00e9\ud83d\ude00\n", "c": {}} "#)
        let object = try #require(value.objectValue)
        #expect(object.keys == ["b", "a", "c"])
        #expect(object["a"] == .string("x\"é😀\n"))
        #expect(object["b"]?.arrayValue?.count == 5)
        #expect(object["b"]?.arrayValue?[1] == .number(JSONNumber(text: "-2500")))
        #expect(value.description == #"{"b":[1,-2.5e3,true,false,null],"a":"x\"é😀\n","c":{}}"#)
    }

    @Test func numbersCompareByValue() {
        #expect(JSONNumber(text: "1") == JSONNumber(text: "1.0"))
        #expect(JSONNumber(text: "10") != JSONNumber(text: "1e0"))
        #expect(JSONNumber(text: "9007199254740993").integer == 9_007_199_254_740_993)
    }

    @Test func duplicateKeysAreKept() throws {
        let object = try #require(try JSONParser.parse(#"{"a":1,"a":2}"#).objectValue)
        #expect(object.members.count == 2)
        #expect(object["a"] == .number(JSONNumber(2)))
    }

    @Test(arguments: [
        ("{\"a\": 1,}", 1, 9, "expected a member name in double quotes"),
        ("{\n  \"a\": tru\n}", 2, 8, "expected a value"),
        ("[1 2]", 1, 4, "expected ',' or ']' in an array"),
        ("{\"a\" 1}", 1, 6, "expected ':' after a member name"),
        ("\"abc", 1, 1, "unterminated string"),
        ("01", 1, 2, "leading zeros are not allowed in numbers"),
        ("{} x", 1, 4, "after the JSON value"),
        ("", 1, 1, "unexpected end of input"),
        ("\"\\x\"", 1, 2, "invalid escape"),
        ("\"\\ud800\"", 1, 8, "lone UTF-16 surrogate"),
        ("\"é\t\"", 1, 3, "unescaped control character"),
        ("1.", 1, 3, "expected a digit after '.'"),
    ])
    func syntaxErrorsNameLineAndColumn(_ text: String, _ line: Int, _ column: Int, _ reason: String) {
        #expect {
            _ = try JSONParser.parse(text)
        } throws: { error in
            guard let error = error as? JSONSyntaxError else { return false }
            return error.line == line && error.column == column && error.reason.contains(reason)
        }
    }

    @Test func invalidUTF8IsRefused() {
        #expect(throws: JSONSyntaxError.self) { _ = try JSONParser.parse([0x22, 0xFF, 0xFE, 0x22]) }
    }

    @Test func deepNestingIsRefusedNotCrashed() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect {
            _ = try JSONParser.parse(deep)
        } throws: { ($0 as? JSONSyntaxError)?.reason.contains("nesting deeper") == true }
        let fine = String(repeating: "[", count: 500) + String(repeating: "]", count: 500)
        #expect(throws: Never.self) { _ = try JSONParser.parse(fine) }
    }

    @Test func skipValueReportsTheRawSpan() throws {
        let text = Array(#"[ {"id": "a", "x": [1,2]} , 7 ]"#.utf8)
        let spans = try text.withUnsafeBytes { buffer in
            var parser = JSONParser(buffer)
            _ = parser.offset
            return [try parser.skipValue()]
        }
        #expect(spans == [0..<text.count])
    }

    /// `skipValue` builds nothing but must judge as `parseValue` does: same verdict, same error at the same offset,
    /// same end. Checked on hand-picked cases and on every one-byte change of a document holding each kind of value.
    @Test func skipValueJudgesExactlyAsParseValue() {
        var documents: [[UInt8]] = [
            "{\"a\": 1,}", "{\n  \"a\": tru\n}", "[1 2]", "{\"a\" 1}", "\"abc", "01", "", "\"\\x\"", "\"\\ud800\"", "\"é\t\"", "1.",
            "-", "1e", "1e+", "-0.5E-3", "[[[]]]", "{\"k\":{\"k\":[null,true,false]}}", "\"\\\"", "\"\\u00e9\\ud83d\\ude00\"",
            String(repeating: "[", count: 600) + String(repeating: "]", count: 600),
        ].map { Array($0.utf8) }
        // Bad UTF-8 next to escapes and other errors: which error comes first must not change.
        documents += [
            [0x22, 0xC3, 0x5C, 0x6E, 0xA9, 0x22], [0x22, 0xFF, 0x09, 0x22], [0x22, 0xC3, 0xA9, 0x5C, 0x6E, 0x22],
            [0x22, 0xFF, 0x5C, 0x78, 0x22], [0x22, 0xE2, 0x82], [0x22, 0xC3, 0x5C],
        ]
        let base = Array(#"{"id":"e-1","n":[-12.5e+3,0,true,false,null],"s":"x\"é\u00e9\ud83d\ude00","o":{"k":[]}}"#.utf8)
        for index in base.indices {
            for replacement: UInt8 in [0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x2C, 0x3A, 0x30, 0x2D, 0x65, 0x09, 0xC3, 0xFF] {
                var changed = base
                changed[index] = replacement
                documents.append(changed)
            }
            var shorter = base
            shorter.remove(at: index)
            documents.append(shorter)
        }
        for document in documents {
            let (parsed, skipped) = document.withUnsafeBytes { buffer in
                var parser = JSONParser(buffer)
                var skipper = JSONParser(buffer)
                return (Result { () throws(JSONSyntaxError) in _ = try parser.parseValue(); return parser.offset },
                        Result { () throws(JSONSyntaxError) in try skipper.skipValue().upperBound })
            }
            switch (parsed, skipped) {
            case (.success(let end), .success(let skippedEnd)):
                #expect(end == skippedEnd, "\(String(decoding: document, as: UTF8.self))")
            case (.failure(let error), .failure(let skipError)):
                #expect(error.reason == skipError.reason && error.offset == skipError.offset, "\(error) vs \(skipError)")
            default:
                Issue.record("parse \(parsed), skip \(skipped): \(String(decoding: document, as: UTF8.self))")
            }
        }
    }
}

@Suite struct JSONStructureTests {
    @Test func findsANestedArrayAndTheExactBytesOfEachElement() throws {
        let text = Array(#"{"took": 3, "hits": {"total": 2, "hits": [ {"_id":"a","_source":{"x": 1.50}} ,{"_id":"b"}]}, "z": null}"#.utf8)
        let found: [String] = try text.withUnsafeBytes { buffer in
            var parser = JSONParser(buffer)
            var spans: [String] = []
            try parser.beginObject()
            while let key = try parser.nextKey() {
                guard key == "hits" else { _ = try parser.parseValue(); continue }
                try parser.beginObject()
                while let inner = try parser.nextKey() {
                    guard inner == "hits" else { _ = try parser.parseValue(); continue }
                    try parser.beginArray()
                    while try parser.nextElement() {
                        let (_, span) = try parser.parseValueWithSpan()
                        spans.append(String(decoding: buffer[span], as: UTF8.self))
                    }
                }
            }
            try parser.finish()
            return spans
        }
        #expect(found == [#"{"_id":"a","_source":{"x": 1.50}}"#, #"{"_id":"b"}"#])
    }

    @Test(arguments: [#"[1, 2"#, #"[1 2]"#, #"[1,]"#, #"{"a": [1]"#, #"[1] x"#, #"[,1]"#])
    func truncatedOrMalformedStructureThrows(_ text: String) {
        #expect(throws: JSONSyntaxError.self) {
            try Array(text.utf8).withUnsafeBytes { buffer in
                var parser = JSONParser(buffer)
                if parser.peekKind() == .object {
                    try parser.beginObject()
                    while try parser.nextKey() != nil {
                        try parser.beginArray()
                        while try parser.nextElement() { _ = try parser.parseValue() }
                    }
                } else {
                    try parser.beginArray()
                    while try parser.nextElement() { _ = try parser.parseValue() }
                }
                try parser.finish()
            }
        }
    }
}
