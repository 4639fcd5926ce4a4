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
