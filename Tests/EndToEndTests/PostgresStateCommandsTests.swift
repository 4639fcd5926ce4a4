import Foundation
import RelayCore
import RelayJSON
import RelayPostgres
import Testing

/// The operator's commands with a config whose store is PostgreSQL: the real binary reads and changes the shared
/// schema from any machine that reaches the database, with no relay running.
@Suite(.enabled(if: TestPostgres.socket != nil, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
struct PostgresStateCommandsTests {
    static let t0 = Timestamp(millisecondsSinceEpoch: 1_714_521_600_000)

    /// Five events for "all" in `schema`: e0–e3 dead-lettered with a 400, e4 delivered.
    static func deadLetterFour(_ database: RelayDatabase) async throws {
        try await PostgresSchema.migrate(database)
        let queue = PostgresDeliveries(database)
        let events = (0..<5).map { n in
            let time = t0.advanced(by: .milliseconds(Int64(n)))
            return Event(id: "e\(n)", time: time, action: "click", timeValue: .string(time.iso8601), 
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

    /// Runs `body` with a config for a fresh schema of the test cluster, and a runner of the binary with that config.
    static func withSchema(
        _ body: (_ schema: String, _ relay: @escaping ([String]) async throws -> RelayBinary.Outcome) async throws -> Void
    ) async throws {
        try await DaemonTests.withSetup { setup in
            let schema = "cmd_" + UUID().uuidString.prefix(8).lowercased()
            let (config, url) = try SeveralInstancesTests.config(setup, schema: schema, pollInterval: "1s")
            try config.write(to: setup.configFile, atomically: true, encoding: .utf8)
            var environment = setup.environment
            environment["RELAY_POSTGRES_URL"] = url
            try await body(schema) { arguments in
                try await RelayBinary.run(arguments + ["--config", setup.configFile.path], environment: environment)
            }
        }
    }

    @Test func deadLettersAreListedShownReplayedAndPurgedInTheSharedSchema() async throws {
        try await Self.withSchema { schema, run in
            func relay(_ arguments: [String]) async throws -> RelayBinary.Outcome { try await run(["dead-letters"] + arguments) }

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

    /// `top` on PostgreSQL shows every instance at once from the database: who polls the source and what each
    /// instance has in flight.
    @Test func topShowsWhoPollsEachSourceAndWhatEachInstanceHasInFlight() async throws {
        try await Self.withSchema { schema, run in
            let none = try await run(["top"])
            #expect(none.status == 66, "\(none.standardError)")
            try await TestPostgres.withDatabase(schema: schema) { database in
                try await Self.deadLetterFour(database)
                let lease = try #require(
                    try await PostgresLeases(database).acquire(PostgresSourceStore.leaseKey(of: "acme"), for: "relay-a/11", ttl: .seconds(300)))
                let sources = PostgresSourceStore(database)
                sources.hold(lease, for: "acme")
                let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
                _ = try await sources.initializeMarks(of: "acme", at: now.advanced(by: .seconds(-90)), lookback: .seconds(5), now: now)
                let queue = PostgresDeliveries(database)
                let more = (5..<8).map { n in
                    Event(id: "e\(n)", time: Self.t0.advanced(by: .milliseconds(Int64(n))), action: "click", timeValue: .string(""),
                          raw: Array("{}".utf8))
                }
                _ = try await queue.queue(more, source: "acme", for: ["all"], now: Self.t0)
                _ = try await queue.claim("all", requests: 2, batchSize: 1, by: "relay-b/22", visibility: .seconds(300))

                // Through a pipe: one view, then exit.
                let top = try await run(["top"])
                #expect(top.status == 0, "\(top.standardError)")
                let lines = top.standardOutput.split(separator: "\n").map(String.init)
                #expect(lines.first == "intilery-relay top: PostgreSQL schema \(schema), every 1s")
                let source = lines.first { $0.hasPrefix("acme ") } ?? ""
                let columns = source.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
                // Cursor, a lag of about 90 s (1m30s or a second or two more), the holder, the lease left.
                #expect(columns.count == 5 && columns[2].hasPrefix("1m3") && columns[3] == "relay-a/11" && columns[4].hasPrefix("4m"), "\(top.standardOutput)")
                // Three queued (two of them in flight on relay-b), four dead letters.
                let subscription = (lines.first { $0.hasPrefix("all ") } ?? "").split(separator: " ", omittingEmptySubsequences: true)
                #expect(subscription.map(String.init) == ["all", "3", "2", "4", "no", "relay-b/22", "2"], "\(top.standardOutput)")
            }
        }
    }

    /// A pause made by any instance shows in `status` and `top`, and `resume` lifts it for all of them.
    @Test func statusShowsAPauseAndResumeLiftsItForEveryInstance() async throws {
        try await Self.withSchema { schema, run in
            try await TestPostgres.withDatabase(schema: schema) { database in
                try await PostgresSchema.migrate(database)
                let since = Timestamp(millisecondsSinceEpoch: 1_714_521_600_000)
                _ = try await PostgresPauses(database).countDeadLetters(
                    "all", events: 5, pauseAfter: 5,
                    pause: { SubscriptionPause(reason: "paused after \($0) consecutive dead letters (HTTP 401)", since: since, webhook: "w") },
                    probeEvery: .seconds(300))

                let status = try await run(["status"])
                #expect(
                    status.standardOutput.contains("subscription all: 0 pending, 0 dead letters, none in flight; PAUSED since 2024-05-01T00:00:00.000Z: paused after 5 consecutive dead letters (HTTP 401)"),
                    "\(status.standardOutput)\(status.standardError)")
                let json = try JSONParser.parse(Array(try await run(["status", "--json"]).standardOutput.utf8))
                let paused = json.objectValue?["subscriptions"]?.arrayValue?.first?.objectValue?["paused"]?.objectValue
                #expect(paused?["reason"]?.stringValue == "paused after 5 consecutive dead letters (HTTP 401)")
                #expect(try await run(["top"]).standardOutput.contains(" PAUSED "))

                let resumed = try await run(["resume", "--subscription", "all"])
                #expect(resumed.status == 0 && resumed.standardOutput == "Resumed all for every instance.\n", "\(resumed.standardOutput)\(resumed.standardError)")
                #expect(try await PostgresPauses(database).pause(of: "all") == nil)
                #expect(try await run(["resume", "--subscription", "all"]).standardOutput == "all is not paused.\n")
                #expect(try await run(["resume", "--subscription", "nope"]).status == 64)
            }
        }
    }

    /// A subscription that left the config, as the instances recorded it: `status` reports it with when its rows
    /// go, `dead-letters list` says so, and `purge --subscription` takes its queued events with its dead letters.
    @Test func aRemovedSubscriptionIsReportedAndPurgedFromTheSharedSchema() async throws {
        try await Self.withSchema { schema, run in
            try await TestPostgres.withDatabase(schema: schema) { database in
                try await Self.deadLetterFour(database)
                let events = (10..<13).map { n in
                    Event(id: "e\(n)", time: Self.t0.advanced(by: .milliseconds(Int64(n))), action: "click", timeValue: .string(""),
                          raw: Array("{}".utf8))
                }
                _ = try await PostgresDeliveries(database).queue(events, source: "acme", for: ["gone"], now: Self.t0)
                // What an instance records at its start or reload.
                _ = try await PostgresOrphans(database).reconcileOrphans(current: ["all"], now: Self.t0)

                let status = try await run(["status"])
                #expect(status.standardOutput.contains("removed subscription gone: 3 queued, 0 dead letters, not sent;"), "\(status.standardOutput)")
                let json = try JSONParser.parse(Array(try await run(["status", "--json"]).standardOutput.utf8))
                #expect(json.objectValue?["orphans"]?.arrayValue?.first?.objectValue?["queued"] == .number(JSONNumber(3)))
                let list = try await run(["dead-letters", "list", "--subscription", "gone"])
                #expect(list.status == 0 && list.standardOutput.contains("gone is no longer in the config"), "\(list.standardOutput)\(list.standardError)")
                let purge = try await run(["dead-letters", "purge", "--subscription", "gone", "--json"])
                #expect(purge.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == #"{"purged":0,"queuedPurged":3}"#, "\(purge.standardOutput)")
                #expect(try await PostgresStatus(database).queueDepths()["gone"] == nil)
                #expect(try await run(["dead-letters", "list", "--subscription", "gone"]).status == 64, "nothing of it is left")
            }
        }
    }
}
