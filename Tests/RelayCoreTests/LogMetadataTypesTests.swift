import Foundation
import Testing

/// JSON logs keep one type per key: a consumer (Vector, Loki, jq) that reads `failures` as a number on one line must
/// not meet it as a string on another. The handler writes numbers only for values given as numbers
/// (`.stringConvertible(count)`); a value interpolated into a string (`"\(count)"`) is a string. This reads every
/// metadata entry in Sources/ and holds the call sites to it.
@Suite struct LogMetadataTypesTests {
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources").standardizedFileURL

    /// Each metadata key in Sources/ (in a literal, `"key": value`, or set on its own, `metadata["key"] = value`),
    /// with whether it was given as a number (`.stringConvertible`) or as text, and where.
    static func metadataEntries() throws -> [(key: String, number: Bool, at: String)] {
        let files = try #require(FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil))
            .compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }
        var entries: [(key: String, number: Bool, at: String)] = []
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            for match in text.matches(of: /"([a-z_]+)"(?:: |\] = )(\.stringConvertible\(|"\\\()/) {
                let line = text[..<match.range.lowerBound].count { $0 == "\n" } + 1
                entries.append((String(match.output.1), match.output.2.hasPrefix("."), "\(file.lastPathComponent):\(line)"))
            }
        }
        return entries
    }

    /// Keys that name counts: numbers wherever they are given, even where no other line gives them.
    static let counts: Set<String> = [
        "attempt", "attempts", "count", "dead_letters", "epoch", "events", "failures", "limit", "outcomes", "problems",
        "queued", "sources", "stale", "status", "subscriptions", "suppressed",
    ]

    @Test func aKeyGivenAsANumberAnywhereIsANumberEverywhere() throws {
        let entries = try Self.metadataEntries()
        let numeric = Set(entries.filter(\.number).map(\.key)).union(Self.counts)
        // The sources were found and read: not a vacuous pass.
        #expect(Set(entries.filter(\.number).map(\.key)).isSuperset(of: ["failures", "retry_in_s", "events", "status"]))
        #expect(entries.contains { !$0.number && $0.key == "subscription" })
        for entry in entries where !entry.number && (numeric.contains(entry.key) || entry.key.hasSuffix("_s")) {
            Issue.record("\(entry.at): \"\(entry.key)\" is given as text here and as a number elsewhere; use .stringConvertible")
        }
    }
}
