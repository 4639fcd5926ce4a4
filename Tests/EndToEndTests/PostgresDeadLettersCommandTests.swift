import Foundation
import RelayCore
import RelayJSON
import RelayPostgres
import Testing

/// `dead-letters` with a config whose store is PostgreSQL: the real binary lists, shows, replays and purges the
/// shared schema's dead letters, from any machine that reaches the database, with no relay running.
@Suite(.enabled(if: TestPostgres.socket != nil, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
struct PostgresDeadLettersCommandTests {
    static let t0 = Timestamp(millisecondsSinceEpoch: 1_714_521_600_000)

    /// Five events for "all" in `schema`: e0–e3 dead-lettered with a 400, e4 delivered.
    static func deadLetterFour(_ database: RelayDatabase) async throws {
        try await PostgresSchema.migrate(database)
        let queue = PostgresDeliveries(database)
        let events = (0..<5).map { n in
            let time = t0.advanced(by: .milliseconds(Int64(n)))
            return Event(id: "e\(n)", time: time, action: "click", timeValue: .string(time.iso8601), fields: JSONObject(),
                         raw: Array(#"{"eventID":"e\#(n)","note":"kept"}"#.utf8))
        }
        _ = try await queue.queue(events, source: "acme", for: ["all"], now: t0)
        let claimed = try await queue.claim("all", requests: 5, batchSize: 1, by: "relay-1", visibility: .seconds(300))
        _ = try await queue.record(
            claimed.enumerated().map { index, request in
                ClaimedOutcome(
                    token: request.token,
                    outcome: DeliveryOutcome(
                        deliveries: request.deliveries, decision: index < 4 ? .deadLetter(reason: "http_400") : .delivered,
                        attemptedAt: t0.advanced(by: .seconds(Int64(index))), status: index < 4 ? 400 : 200))
            }, now: t0)
    }

    @Test func listShowReplayAndPurgeActOnTheSharedSchema() async throws {
        try await DaemonTests.withSetup { setup in
            let schema = "dl_" + UUID().uuidString.prefix(8).lowercased()
            let (config, url) = try SeveralInstancesTests.config(setup, schema: schema, pollInterval: "1s")
            try config.write(to: setup.configFile, atomically: true, encoding: .utf8)
            var environment = setup.environment
            environment["RELAY_POSTGRES_URL"] = url
            func relay(_ arguments: [String]) async throws -> RelayBinary.Outcome {
                try await RelayBinary.run(["dead-letters"] + arguments + ["--config", setup.configFile.path], environment: environment)
            }

            // Before the relay has run on the schema there is no state, as with a SQLite state directory.
            let none = try await relay(["list"])
            #expect(none.status == 66 && none.standardError.contains("no state in PostgreSQL schema \(schema)"), "\(none.standardError)")

            try await TestPostgres.withDatabase(schema: schema) { database in
                try await Self.deadLetterFour(database)

                let listed = try await relay(["list", "--json"])
                #expect(listed.status == 0, "\(listed.standardError)")
                let letters = try JSONParser.parse(Array(listed.standardOutput.utf8)).arrayValue ?? []
                #expect(letters.compactMap { $0.objectValue?["eventID"]?.stringValue } == ["e0", "e1", "e2", "e3"])
                let text = try await relay(["list", "--limit", "2"])
                #expect(text.standardOutput.hasPrefix("ID ") && text.standardOutput.contains("(the first 2; --limit for more)"), "\(text.standardOutput)")

                guard case .number(let number)? = letters.first?.objectValue?["id"] else { Issue.record("no id in \(listed.standardOutput)"); return }
                let id = try #require(number.integer)
                let shown = try await relay(["show", String(id)])
                #expect(shown.status == 0 && shown.standardOutput.contains(#"{"eventID":"e0","note":"kept"}"#), "\(shown.standardOutput)")
                #expect(shown.standardOutput.contains("status         400"), "\(shown.standardOutput)")
                #expect(try await relay(["show", "999999"]).status == 64)

                let dryRun = try await relay(["replay", "--dry-run", "--json"])
                #expect(dryRun.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == #"{"wouldReplay":4}"#)
                let replayed = try await relay(["replay", "--status", "400", "--limit", "3", "--json"])
                #expect(replayed.status == 0, "\(replayed.standardError)")
                #expect(replayed.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == #"{"replayed":3,"alreadyQueued":0}"#)
                #expect(try await PostgresStatus(database).queueDepths() == ["all": 3])

                let unknown = try await relay(["list", "--subscription", "gone"])
                #expect(unknown.status == 64 && unknown.standardError.contains("no subscription named gone"), "\(unknown.standardError)")
                #expect(try await relay(["purge"]).status != 0)
                let purged = try await relay(["purge", "--all", "--json"])
                #expect(purged.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == #"{"purged":1}"#, "\(purged.standardError)")
                #expect(try await PostgresDeadLetters(database).countDeadLetters(DeadLetterFilter()) == 0)
            }
        }
    }
}
