import Foundation
import RelayCore
import RelayJSON
import Testing

/// `status` through the real binary, over a state store written by the library.
@Suite struct StatusCommandTests {
    static let config = #"""
        {"sources": [{"name": "acme", "clientId": "acme", "accountId": "acme", "brandId": "ACME",
                      "authToken": {"env": "TOKEN_NOT_NEEDED_FOR_STATUS"}}],
         "subscriptions": [{"name": "clicks", "webhook": {"url": "https://example.com/h", "secret": {"env": "NOR_THIS"}}},
                           {"name": "idle", "webhook": {"url": "https://example.com/i"}}]}
        """#

    @Test func reportsCursorLagAndQueuesWithoutNeedingSecrets() async throws {
        try await withTemporaryDirectory { directory in
            let configFile = directory.appendingPathComponent("config.json")
            try Self.config.write(to: configFile, atomically: true, encoding: .utf8)
            let stateDirectory = directory.appendingPathComponent("state")

            // A wrong --state-dir must not read as an empty, healthy state: every state command says so and exits 66.
            for command in [["status"], ["status", "--json"], ["dead-letters", "list"], ["dead-letters", "purge", "--all"], ["dead-letters", "replay"],
                            ["resume", "--subscription", "clicks"]] {
                let before = try await RelayBinary.run(command + ["--config", configFile.path, "--state-dir", stateDirectory.path])
                #expect(before.status == 66, "\(command): \(before.standardOutput)")
                #expect(before.standardError.contains("no state in \(stateDirectory.path)"), "\(command): \(before.standardError)")
                #expect(before.standardOutput.isEmpty, "\(command): \(before.standardOutput)")
            }
            #expect(!FileManager.default.fileExists(atPath: stateDirectory.path))

            let store = try StateStore.open(directory: stateDirectory.path)
            let events = (0..<3).map { n in
                RoutedEvent(
                    event: Event(
                        id: "e\(n)", time: Timestamp(millisecondsSinceEpoch: 1_714_521_600_000 + Int64(n)), action: "email_click",
                        timeValue: .null, raw: Array("{}".utf8)),
                    subscriptions: ["clicks"])
            }
            _ = try await store.enqueue(
                source: "acme", events: events, advance: MarkAdvance(live: Timestamp(millisecondsSinceEpoch: 1_714_521_600_002)),
                skipped: [.timeOutOfRange: 2, .missingID: 1], now: Timestamp(millisecondsSinceEpoch: 1_714_521_601_000))

            let text = try await RelayBinary.run(["status", "--config", configFile.path, "--state-dir", stateDirectory.path])
            #expect(text.status == 0, "\(text.standardError)")
            #expect(text.standardOutput.contains("source acme: cursor 2024-05-01T00:00:00.002Z, lag "))
            #expect(text.standardOutput.contains("skipped 3 unreadable events (missing_id 1, time_out_of_range 2)"))
            #expect(text.standardOutput.contains("subscription clicks: 3 pending (oldest event 2024-05-01T00:00:00.000Z), 0 dead letters"))
            #expect(text.standardOutput.contains("subscription idle: 0 pending"))

            let json = try await RelayBinary.run(["status", "--config", configFile.path, "--state-dir", stateDirectory.path, "--json"])
            #expect(json.status == 0)
            let document = try JSONParser.parse(json.standardOutput)
            let sources = try #require(document.objectValue?["sources"]?.arrayValue)
            #expect(sources.first?.objectValue?["cursor"] == .string("2024-05-01T00:00:00.002Z"))
            #expect(sources.first?.objectValue?["skipped"]?.objectValue?["time_out_of_range"] == .number(JSONNumber(2)))
            #expect((sources.first?.objectValue?["lagSeconds"]).map { if case .number = $0 { true } else { false } } == true)
            let subscriptions = try #require(document.objectValue?["subscriptions"]?.arrayValue)
            #expect(subscriptions.map { $0.objectValue?["pending"] } == [.number(JSONNumber(3)), .number(JSONNumber(0))])
        }
    }

    @Test func unusableStateDirectoryExits74() async throws {
        try await withTemporaryDirectory { directory in
            let configFile = directory.appendingPathComponent("config.json")
            try Self.config.write(to: configFile, atomically: true, encoding: .utf8)
            // A state "directory" that is a file holding garbage where the database should be.
            let state = directory.appendingPathComponent("state")
            try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
            try Data(repeating: 0x41, count: 4096).write(to: state.appendingPathComponent(StateStore.fileName))
            let outcome = try await RelayBinary.run(["status", "--config", configFile.path, "--state-dir", state.path])
            #expect(outcome.status == 74)
            #expect(outcome.standardError.contains("state store"))
        }
    }
}
