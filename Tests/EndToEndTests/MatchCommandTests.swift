import Foundation
import RelayJSON
import Testing

/// `intilery-relay match`: a filter tried on events before it is deployed.
@Suite struct MatchCommandTests {
    static let config = #"""
        {"sources": [{"name": "acme", "clientId": "acme", "accountId": "acme", "brandId": "ACME", "authToken": {"env": "NOT_NEEDED"}}],
         "subscriptions": [{"name": "big", "exclude": ["refund"],
                            "where": {"all": [{"path": "properties.total", "op": "gte", "value": 500},
                                              {"not": {"path": "properties.test", "op": "eq", "value": true}}]},
                            "webhook": {"url": {"env": "NOT_NEEDED_EITHER"}}},
                           {"name": "clicks", "include": ["email_click"], "webhook": {"url": "https://e.com/c"}}]}
        """#

    static let events = [
        #"{"eventID":"e1","timestamp":"2024-05-01T00:00:00Z","action":"purchase","properties":{"total":700}}"#,
        #"{"eventID":"e2","timestamp":"2024-05-01T00:00:01Z","action":"purchase","properties":{"total":100}}"#,
        #"{"eventID":"e3","timestamp":"2024-05-01T00:00:02Z","action":"refund","properties":{"total":900}}"#,
        #"{"eventID":"e4","timestamp":"2024-05-01T00:00:03Z","action":"purchase","properties":{"total":900,"test":true}}"#,
    ]

    @Test func eachEventGetsAVerdictAndTheClauseThatDecided() async throws {
        try await withTemporaryDirectory { directory in
            let configFile = directory.appendingPathComponent("config.json")
            try Self.config.write(to: configFile, atomically: true, encoding: .utf8)
            // One event per line, with a line that is not JSON.
            let lines = directory.appendingPathComponent("events.jsonl")
            try (Self.events + ["not json"]).joined(separator: "\n").write(to: lines, atomically: true, encoding: .utf8)
            let text = try await RelayBinary.run(["match", "--config", configFile.path, "--subscription", "big", lines.path])
            #expect(text.status == 0, "\(text.standardError)")
            let rows = text.standardOutput.split(separator: "\n").map(String.init)
            #expect(rows.first?.hasPrefix("VERDICT") == true)
            #expect(rows.contains { $0.hasPrefix("selected") && $0.contains("e1") && $0.contains("where: (properties.total gte 500 and not properties.test eq true)") })
            #expect(rows.contains { $0.hasPrefix("not selected") && $0.contains("e2") && $0.contains("properties.total gte 500 (the event has 100)") })
            #expect(rows.contains { $0.contains("e3") && $0.contains(#"exclude: names the action "refund""#) })
            #expect(rows.contains { $0.contains("e4") && $0.contains("where: not (properties.test eq true (the event has true))") })
            #expect(rows.last == "big selects 1 of 4 events; 1 unreadable (not JSON, or no id or time).")

            // A page body, as the API sends it, from a file; JSON out.
            let page = directory.appendingPathComponent("page.json")
            try #"{"events": [\#(Self.events.joined(separator: ","))]}"#.write(to: page, atomically: true, encoding: .utf8)
            let json = try await RelayBinary.run(["match", "--config", configFile.path, "--subscription", "clicks", "--json", page.path])
            let verdicts = try #require(try JSONParser.parse(json.standardOutput).arrayValue)
            #expect(verdicts.count == 4)
            #expect(verdicts.allSatisfy { $0.objectValue?["selected"] == .bool(false) })
            #expect(verdicts.first?.objectValue?["decidedBy"] == .string(#"include: the action "purchase" is not one of email_click"#))

            #expect(try await RelayBinary.run(["match", "--config", configFile.path, "--subscription", "nope", page.path]).status == 64)
            let empty = directory.appendingPathComponent("empty.json")
            try "[]".write(to: empty, atomically: true, encoding: .utf8)
            #expect(try await RelayBinary.run(["match", "--config", configFile.path, "--subscription", "big", empty.path]).status == 65)
            #expect(try await RelayBinary.run(["match", "--config", configFile.path, "--subscription", "big", "/nonexistent"]).status == 66)
        }
    }

    @Test func readsStandardInputWithADashOrNoFileNamed() async throws {
        try await withTemporaryDirectory { directory in
            let configFile = directory.appendingPathComponent("config.json")
            try Self.config.write(to: configFile, atomically: true, encoding: .utf8)
            let base = ["match", "--config", configFile.path, "--subscription", "big"]

            // One event per line, on standard input named "-".
            let lines = try await RelayBinary.run(base + ["-"], input: Array(Self.events.joined(separator: "\n").utf8))
            #expect(lines.status == 0, "\(lines.standardError)")
            #expect(lines.standardOutput.split(separator: "\n").last == "big selects 1 of 4 events.", "\(lines.standardOutput)")

            // A bare JSON array over several lines (no line of it an event by itself), with no file named.
            let array = try await RelayBinary.run(base + ["--json"], input: Array("[\n\(Self.events.joined(separator: ",\n"))\n]".utf8))
            #expect(array.status == 0, "\(array.standardError)")
            let verdicts = try #require(try JSONParser.parse(array.standardOutput).arrayValue, "\(array.standardOutput)")
            #expect(verdicts.map { $0.objectValue?["id"]?.stringValue } == ["e1", "e2", "e3", "e4"])
            #expect(verdicts.map { $0.objectValue?["selected"] } == [.bool(true), .bool(false), .bool(false), .bool(false)])

            let nothing = try await RelayBinary.run(base, input: [])
            #expect(nothing.status == 65)
            #expect(nothing.standardError.contains("no event in standard input"), "\(nothing.standardError)")
        }
    }

    /// A source whose pages need `response` overrides: match reads events where the relay would.
    @Test func readsEventsWhereTheSourcesResponseOverridesSay() async throws {
        try await withTemporaryDirectory { directory in
            let configFile = directory.appendingPathComponent("config.json")
            try #"""
                {"sources": [{"name": "custom", "clientId": "acme", "accountId": "acme", "brandId": "ACME", "authToken": {"env": "NOT_NEEDED"},
                              "response": {"eventsPath": "/payload/list", "idField": "meta.ref", "timestampField": "occurred", "actionField": "kind"}}],
                 "subscriptions": [{"name": "orders", "include": ["purchase"], "webhook": {"url": "https://e.com/o"}}]}
                """#.write(to: configFile, atomically: true, encoding: .utf8)
            let events = [
                #"{"meta": {"ref": "c1"}, "occurred": "2024-05-01T00:00:00Z", "kind": "purchase"}"#,
                #"{"meta": {"ref": "c2"}, "occurred": 1714521601000, "kind": "refund"}"#,
            ]
            func verdicts(_ input: String) async throws -> [JSONValue] {
                let outcome = try await RelayBinary.run(
                    ["match", "--config", configFile.path, "--subscription", "orders", "--json"], input: Array(input.utf8))
                #expect(outcome.status == 0, "\(outcome.standardError)")
                return try JSONParser.parse(outcome.standardOutput).arrayValue ?? []
            }
            // A page at eventsPath, which no default shape would find; and one event per line, read with the
            // overridden fields.
            for input in [#"{"payload": {"list": [\#(events.joined(separator: ","))]}}"#, events.joined(separator: "\n")] {
                let found = try await verdicts(input)
                #expect(found.map { $0.objectValue?["id"]?.stringValue } == ["c1", "c2"], "\(input)")
                #expect(found.map { $0.objectValue?["action"]?.stringValue } == ["purchase", "refund"], "\(input)")
                #expect(found.map { $0.objectValue?["selected"] } == [.bool(true), .bool(false)], "\(input)")
            }
        }
    }
}
