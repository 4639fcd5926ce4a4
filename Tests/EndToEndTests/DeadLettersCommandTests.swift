import Foundation
import RelayCore
import RelayJSON
import Testing

/// `dead-letters list|replay|purge` through the real binary, over a store the library filled.
@Suite struct DeadLettersCommandTests {
    @Test func listReplayAndPurge() async throws {
        try await withTemporaryDirectory { directory in
            let configFile = directory.appendingPathComponent("config.json")
            try StatusCommandTests.config.write(to: configFile, atomically: true, encoding: .utf8)
            let state = directory.appendingPathComponent("state").path
            let base = ["--config", configFile.path, "--state-dir", state]

            let store = try StateStore.open(directory: state)
            let t0 = Timestamp(millisecondsSinceEpoch: 1_714_521_600_000)
            let events = (0..<3).map { n in
                RoutedEvent(
                    event: Event(id: "e\(n)", time: t0.advanced(by: .milliseconds(Int64(n))), action: "a", timeValue: .string("t"),
                                 fields: JSONObject(), raw: Array("{}".utf8)),
                    subscriptions: n == 2 ? ["idle"] : ["clicks"])
            }
            _ = try await store.enqueue(source: "acme", events: events, cursor: t0, now: t0)
            for subscription in ["clicks", "idle"] {
                let rows = try await store.deliveries(subscription: subscription, due: t0, limit: 10, strict: false, excluding: [])
                try await store.record(rows.map {
                    DeliveryOutcome(
                        deliveries: [$0], decision: .deadLetter(reason: "http_410"), attemptedAt: t0.advanced(by: .seconds(1)),
                        status: 410, error: "http_410", responseSnippet: Array("gone".utf8))
                })
            }

            let list = try RelayBinary.run(["dead-letters", "list"] + base + ["--json"])
            #expect(list.status == 0, "\(list.standardError)")
            let array = try #require(try JSONParser.parse(list.standardOutput).arrayValue)
            #expect(array.count == 3)
            let first = try #require(array.first?.objectValue)
            #expect(first.keys == ["id", "subscription", "eventID", "reason", "status", "attempts", "firstAttemptAt", "lastAttemptAt"])
            #expect(first["reason"] == .string("http_410"))
            #expect(first["status"] == .number(JSONNumber(410)))
            #expect(first["attempts"] == .number(JSONNumber(1)))
            #expect(first["firstAttemptAt"] == .string("2024-05-01T00:00:01.000Z"))

            let text = try RelayBinary.run(["dead-letters", "list"] + base + ["--subscription", "idle"])
            #expect(text.standardOutput.contains("idle  e2  http_410  status 410  attempts 1"))
            #expect(!text.standardOutput.contains("clicks"))

            let replay = try RelayBinary.run(["dead-letters", "replay"] + base + ["--subscription", "clicks"])
            #expect(replay.status == 0)
            #expect(replay.standardOutput.contains("Replayed 2 dead letters."))
            #expect(try await store.deliveries(subscription: "clicks", due: t0.advanced(by: .seconds(3600 * 24 * 365 * 10)), limit: 10, strict: false, excluding: []).map(\.attempts) == [0, 0])

            let purge = try RelayBinary.run(["dead-letters", "purge"] + base + ["--json"])
            #expect(purge.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == #"{"purged":1}"#)
            #expect(try await store.deadLetters().isEmpty)

            let unknown = try RelayBinary.run(["dead-letters", "list"] + base + ["--subscription", "nope"])
            #expect(unknown.status == 64)
        }
    }
}
