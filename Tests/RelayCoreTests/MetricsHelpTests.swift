import Foundation
import RelayCore
import Testing

/// Every metric the relay makes gets a `# HELP` line on `/metrics`. The end-to-end page test sees only the metrics
/// a run happened to make; this one reads every metric name in the sources.
@Suite struct MetricsHelpTests {
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources").standardizedFileURL

    /// Every `"intilery_relay_…"` string literal in Sources/.
    static func metricNames() throws -> Set<String> {
        let files = try #require(FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil))
            .compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }
        var names: Set<String> = []
        for file in files {
            let text = try String(contentsOf: file, encoding: .utf8)
            names.formUnion(text.matches(of: /"(intilery_relay_[a-z0-9_]+)"/).map { String($0.output.1) })
        }
        return names
    }

    @Test func everyMetricNamedInTheSourcesHasHelp() throws {
        let names = try Self.metricNames()
        // The sources were found, and read: not a vacuous pass.
        #expect(names.isSuperset(of: ["intilery_relay_deliveries_total", "intilery_relay_cursor_timestamp_seconds"]), "\(names.sorted())")
        let registry = names.sorted().map { "# TYPE \($0) gauge\n\($0) 1\n" }.joined()
        let page = String(decoding: MetricsPage.render(registry: Array(registry.utf8)), as: UTF8.self)
        for name in names.sorted() {
            #expect(page.contains("# HELP \(name) "), "\(name) has no entry in MetricsPage.help")
        }
    }
}
