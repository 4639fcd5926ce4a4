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
                                 raw: Array("{}".utf8)),
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

            let list = try await RelayBinary.run(["dead-letters", "list"] + base + ["--json"])
            #expect(list.status == 0, "\(list.standardError)")
            let array = try #require(try JSONParser.parse(list.standardOutput).arrayValue)
            #expect(array.count == 3)
            let first = try #require(array.first?.objectValue)
            #expect(first.keys == ["id", "subscription", "eventID", "reason", "status", "attempts", "firstAttemptAt", "lastAttemptAt"])
            #expect(first["reason"] == .string("http_410"))
            #expect(first["status"] == .number(JSONNumber(410)))
            #expect(first["attempts"] == .number(JSONNumber(1)))
            #expect(first["firstAttemptAt"] == .string("2024-05-01T00:00:01.000Z"))

            let text = try await RelayBinary.run(["dead-letters", "list"] + base + ["--subscription", "idle"])
            let textLines = text.standardOutput.split(separator: "\n").map(String.init)
            #expect(textLines.count == 2, "\(text.standardOutput)")
            #expect(textLines.first?.hasPrefix("ID") == true && textLines.first?.contains("SUBSCRIPTION  EVENT  STATUS  ATTEMPTS") == true, "\(textLines)")
            #expect(textLines.last?.contains("idle") == true && textLines.last?.hasSuffix("http_410") == true, "\(textLines)")
            #expect(!text.standardOutput.contains("clicks"))

            // Filters: each narrows, and they combine.
            func count(_ filters: [String]) async throws -> Int? {
                let outcome = try await RelayBinary.run(["dead-letters", "list"] + base + ["--json"] + filters)
                return try JSONParser.parse(outcome.standardOutput).arrayValue?.count
            }
            #expect(try await count(["--reason", "http_4"]) == 3)
            #expect(try await count(["--reason", "max_age"]) == 0)
            #expect(try await count(["--status", "410"]) == 3)
            #expect(try await count(["--status", "500"]) == 0)
            #expect(try await count(["--since", "2024-05-01T00:00:02Z"]) == 0)
            #expect(try await count(["--until", "2024-05-01T00:00:02Z", "--subscription", "clicks"]) == 2)
            #expect(try await count(["--limit", "1"]) == 1)
            #expect(try await RelayBinary.run(["dead-letters", "list"] + base + ["--since", "yesterday"]).status == 64)

            // show: the event as received and the receiver's last answer.
            let id = try #require(array.first?.objectValue?["id"].flatMap { if case .number(let n) = $0 { Int(n.text) } else { nil } })
            let show = try await RelayBinary.run(["dead-letters", "show", "\(id)"] + base)
            #expect(show.status == 0, "\(show.standardError)")
            #expect(show.standardOutput.contains("response       (4 bytes kept)\ngone"), "\(show.standardOutput)")
            #expect(show.standardOutput.contains("event as received:\n{}"))
            let showJSON = try #require(try await JSONParser.parse(RelayBinary.run(["dead-letters", "show", "\(id)", "--json"] + base).standardOutput).objectValue)
            #expect(showJSON["response"] == .string("gone"))
            #expect(showJSON["event"] == .object(JSONObject()))
            #expect(try await RelayBinary.run(["dead-letters", "show", "999"] + base).status == 64)

            let dryRun = try await RelayBinary.run(["dead-letters", "replay"] + base + ["--subscription", "clicks", "--dry-run"])
            #expect(dryRun.standardOutput.contains("Would replay 2 dead letters"), "\(dryRun.standardOutput)")
            #expect(try await store.deadLetters().count == 3)

            let replay = try await RelayBinary.run(["dead-letters", "replay"] + base + ["--subscription", "clicks"])
            #expect(replay.status == 0)
            #expect(replay.standardOutput.contains("Replayed 2 dead letters."))
            #expect(!replay.standardError.contains("replayed 2 of"), "no progress without a terminal")
            #expect(try await store.deliveries(subscription: "clicks", due: t0.advanced(by: .seconds(3600 * 24 * 365 * 10)), limit: 10, strict: false, excluding: []).map(\.attempts) == [0, 0])

            // Purging everything must be meant.
            let unfiltered = try await RelayBinary.run(["dead-letters", "purge"] + base)
            #expect(unfiltered.status == 64)
            #expect(unfiltered.standardError.contains("add --all"), "\(unfiltered.standardError)")
            #expect(try await store.deadLetters().count == 1)
            // On a terminal (script(1) gives it one), the progress shows on standard error.
            let command = ([RelayBinary.path, "dead-letters", "purge", "--subscription", "idle"] + base).joined(separator: " ")
            let onTerminal = try await RelayBinary.run(["-qec", command, "/dev/null"], executable: "/usr/bin/script")
            #expect(onTerminal.status == 0, "\(onTerminal.standardOutput)")
            #expect(onTerminal.standardOutput.contains("purged 1 of 1"), "\(onTerminal.standardOutput)")
            #expect(onTerminal.standardOutput.contains("Purged 1 dead letters."))
            let purge = try await RelayBinary.run(["dead-letters", "purge", "--all"] + base + ["--json"])
            #expect(purge.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == #"{"purged":0}"#)
            #expect(!purge.standardError.contains("purged 0 of"), "no progress without a terminal")
            #expect(try await store.deadLetters().isEmpty)

            let unknown = try await RelayBinary.run(["dead-letters", "list"] + base + ["--subscription", "nope"])
            #expect(unknown.status == 64)
        }
    }

    @Test func showGivesTheReasonTheAttemptsAndTheirTimes() async throws {
        try await withTemporaryDirectory { directory in
            let (store, base) = try await Self.deadLetteredAtTheSecondAttempt(1, in: directory)
            let id = try #require(try await store.deadLetters().first?.id)

            let text = try await RelayBinary.run(["dead-letters", "show", "\(id)"] + base)
            #expect(text.status == 0, "\(text.standardError)")
            let lines = text.standardOutput.split(separator: "\n").map(String.init)
            for line in [
                "subscription   clicks", "event          e0", "event time     2024-05-01T00:00:00.000Z", "reason         http_410",
                "status         410", "attempts       2", "first attempt  2024-05-01T00:00:01.000Z",
                "last attempt   2024-05-01T00:00:05.000Z", "dead-lettered  2024-05-01T00:00:05.000Z",
            ] {
                #expect(lines.contains(line), "\(line) in:\n\(text.standardOutput)")
            }

            let json = try await RelayBinary.run(["dead-letters", "show", "\(id)", "--json"] + base)
            #expect(json.status == 0, "\(json.standardError)")
            let object = try #require(try JSONParser.parse(json.standardOutput).objectValue, "\(json.standardOutput)")
            #expect(object["eventID"] == .string("e0"))
            #expect(object["reason"] == .string("http_410"))
            #expect(object["status"] == .number(JSONNumber(410)))
            #expect(object["attempts"] == .number(JSONNumber(2)))
            #expect(object["eventTime"] == .string("2024-05-01T00:00:00.000Z"))
            #expect(object["firstAttemptAt"] == .string("2024-05-01T00:00:01.000Z"))
            #expect(object["lastAttemptAt"] == .string("2024-05-01T00:00:05.000Z"))
            #expect(object["deadAt"] == .string("2024-05-01T00:00:05.000Z"))
        }
    }

    @Test func replayShowsProgressOnATerminal() async throws {
        try await withTemporaryDirectory { directory in
            let (store, base) = try await Self.deadLetteredAtTheSecondAttempt(3, in: directory)
            // script(1) gives it a terminal; the progress shows on standard error, which script copies with the rest.
            let command = ([RelayBinary.path, "dead-letters", "replay", "--subscription", "clicks"] + base).joined(separator: " ")
            let onTerminal = try await RelayBinary.run(["-qec", command, "/dev/null"], executable: "/usr/bin/script")
            #expect(onTerminal.status == 0, "\(onTerminal.standardOutput)")
            #expect(onTerminal.standardOutput.contains("replayed 3 of 3"), "\(onTerminal.standardOutput)")
            #expect(onTerminal.standardOutput.contains("Replayed 3 dead letters."), "\(onTerminal.standardOutput)")
            #expect(try await store.deadLetters().isEmpty)
            let queued = try await store.deliveries(
                subscription: "clicks", due: Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000) + 60_000),
                limit: 10, strict: false, excluding: [])
            #expect(queued.map(\.eventID).sorted() == ["e0", "e1", "e2"])
        }
    }

    /// A state in `directory` (with StatusCommandTests' config) holding `count` dead letters of "clicks", each
    /// dead at its second attempt: a 503 at 00:00:01, retried, then a 410 at 00:00:05. The store, and the
    /// options that name it.
    static func deadLetteredAtTheSecondAttempt(_ count: Int, in directory: URL) async throws -> (StateStore, [String]) {
        let configFile = directory.appendingPathComponent("config.json")
        try StatusCommandTests.config.write(to: configFile, atomically: true, encoding: .utf8)
        let state = directory.appendingPathComponent("state").path
        let store = try StateStore.open(directory: state)
        let t0 = Timestamp(millisecondsSinceEpoch: 1_714_521_600_000)
        let events = (0..<count).map { n in
            RoutedEvent(
                event: Event(id: "e\(n)", time: t0.advanced(by: .milliseconds(Int64(n))), action: "a", timeValue: .string("t"), raw: Array("{}".utf8)),
                subscriptions: ["clicks"])
        }
        _ = try await store.enqueue(source: "acme", events: events, cursor: t0, now: t0)
        let first = try await store.deliveries(subscription: "clicks", due: t0, limit: 10, strict: false, excluding: [])
        try await store.record([
            DeliveryOutcome(
                deliveries: first, decision: .retry(at: t0.advanced(by: .seconds(2))), attemptedAt: t0.advanced(by: .seconds(1)),
                status: 503, error: "http_503"),
        ])
        let second = try await store.deliveries(subscription: "clicks", due: t0.advanced(by: .seconds(2)), limit: 10, strict: false, excluding: [])
        try await store.record([
            DeliveryOutcome(
                deliveries: second, decision: .deadLetter(reason: "http_410"), attemptedAt: t0.advanced(by: .seconds(5)),
                status: 410, error: "http_410", responseSnippet: Array("gone".utf8)),
        ])
        #expect(try await store.deadLetters().count == count)
        return (store, ["--config", configFile.path, "--state-dir", state])
    }
}
