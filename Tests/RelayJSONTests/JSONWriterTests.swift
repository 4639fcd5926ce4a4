import RelayJSON
import Testing

@Suite struct JSONWriterTests {
    /// Strings that need no escape take a path of their own (appended whole); the ones around them must still be
    /// escaped as JSON requires, and every one must read back as itself.
    @Test(arguments: [
        ("", #""""#),
        ("evt-0001", #""evt-0001""#),
        ("2026-11-30T12:00:00.000Z", #""2026-11-30T12:00:00.000Z""#),
        ("é😀\u{2028}\u{7f}", "\"é😀\u{2028}\u{7f}\""),
        ("say \"hi\"", #""say \"hi\"""#),
        (#"C:\path"#, #""C:\\path""#),
        ("a\nb\rc\td", #""a\nb\rc\td""#),
        ("\u{1}\u{1f}é", #""\u0001\u001fé""#),
        ("ok then \u{0}", #""ok then \u0000""#),
    ])
    func stringsAreEscapedAsJSONRequires(_ string: String, _ written: String) throws {
        var out = ""
        JSONWriter.writeString(string, to: &out)
        #expect(out == written)
        #expect(try JSONParser.parse(out) == .string(string))
    }

    @Test func aStringAppendsToWhatIsThere() {
        var out = "["
        JSONWriter.writeString("a", to: &out)
        out += ","
        JSONWriter.writeString("\"", to: &out)
        #expect(out == "[\"a\",\"\\\"\"")
    }
}
