import CurlHTTP
import Foundation
import IntilerySimulator
import RelayCore
import RelayJSON
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A subscription renamed, removed and added back across reloads of the real daemon: its queued events and dead
/// letters are reported, kept, never sent or replayed under a name nothing sends, and go out again when the name
/// comes back; its gauges leave `/metrics`.
@Suite(.serialized, .timeLimit(.minutes(3))) struct OrphanTests {
    static func config(_ setup: DaemonTests.Setup, subscriptions: [String]) -> String {
        let subs = subscriptions.map { name in
            #"{"name": "\#(name)", "webhook": {"url": "\#(setup.receiver.url("/hooks/\(name)"))", "timeout": "5s", "pauseAfter": 0}}"#
        }.joined(separator: ", ")
        return #"""
            {"stateDirectory": "./state", "metrics": {"listen": "127.0.0.1:0"}, "shutdownGrace": "1s",
             "sources": [\#(DaemonTests.sourceJSON(setup.api, lookback: "5s"))],
             "subscriptions": [\#(subs)]}
            """#
    }

    @Test func renameRemoveAndReAddStrandNothingAndReplayNothingIntoADeadName() async throws {
        try await DaemonTests.withSetup { setup in
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.log.addBacklog(count: 30, from: now - 20_000, to: now)
            // "all" dead-letters its first 5 events and then fails for good; "keep" takes everything.
            setup.receiver.script("/hooks/all", Array(repeating: .status(400), count: 5), then: .status(503))
            try Self.config(setup, subscriptions: ["all", "keep"]).write(to: setup.configFile, atomically: true, encoding: .utf8)
            let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            defer { relay.signal(SIGKILL) }
            #expect(await setup.receiver.waitUntil { $0.successesByPath["/hooks/keep", default: 0] >= 30 })
            #expect(await relay.waitForLog(containing: "circuit open", timeout: .seconds(20)), "\(relay.log)")
            let port = try #require(Self.metricsPort(relay.log))
            #expect(try await Self.metrics(port).contains(#"intilery_relay_circuit_open{subscription="all"} 1"#))

            // Rename "all": its 25 queued events and 5 dead letters stay under the old name, reported, not sent.
            try Self.config(setup, subscriptions: ["renamed", "keep"]).write(to: setup.configFile, atomically: true, encoding: .utf8)
            relay.signal(SIGHUP)
            #expect(await relay.waitForLog(containing: "subscription is no longer in the config", timeout: .seconds(10)))
            #expect(relay.log.contains("subscription=all") && relay.log.contains("queued=25") && relay.log.contains("dead_letters=5"), "\(relay.log)")
            let base = ["--config", setup.configFile.path]
            let status = try RelayBinary.run(["status", "--json"] + base, environment: setup.environment, in: setup.directory)
            #expect(status.status == 0, "\(status.standardError)")
            let orphans = try #require(try JSONParser.parse(status.standardOutput).objectValue?["orphans"]?.arrayValue)
            #expect(orphans.count == 1)
            #expect(orphans.first?.objectValue?["name"] == .string("all"))
            #expect(orphans.first?.objectValue?["queued"] == .number(JSONNumber(25)))
            #expect(orphans.first?.objectValue?["deadLetters"] == .number(JSONNumber(5)))
            // The store agrees.
            let store = try #require(try StateStore.openExisting(directory: setup.directory.appendingPathComponent("state").path))
            let stored = try await store.status(sources: [], subscriptions: ["all"]).subscriptions[0]
            #expect(stored.pending == 25 && stored.deadLetters == 5)

            // Its dead letters can be listed, but not replayed into a name nothing sends; a plain replay leaves them.
            let list = try RelayBinary.run(["dead-letters", "list", "--subscription", "all", "--json"] + base, environment: setup.environment, in: setup.directory)
            #expect(list.status == 0, "\(list.standardError)")
            #expect(try JSONParser.parse(list.standardOutput).arrayValue?.count == 5)
            let refused = try RelayBinary.run(["dead-letters", "replay", "--subscription", "all"] + base, environment: setup.environment, in: setup.directory)
            #expect(refused.status == 64)
            #expect(refused.standardError.contains("all is no longer in the config"))
            let replayAll = try RelayBinary.run(["dead-letters", "replay", "--json"] + base, environment: setup.environment, in: setup.directory)
            #expect(replayAll.standardOutput.contains(#"{"replayed":0}"#), "\(replayAll.standardOutput)")
            #expect(try await store.status(sources: [], subscriptions: ["all"]).subscriptions[0].deadLetters == 5)

            // Its gauges leave /metrics once its dispatcher has stopped (after the 1 s grace).
            var gone = false
            for _ in 0..<100 where !gone {
                gone = try await !Self.metrics(port).contains(#"intilery_relay_circuit_open{subscription="all"}"#)
                if !gone { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(gone)

            // Add "all" back, now answering: its queued events go out, each once, and it is no orphan any more.
            setup.receiver.script("/hooks/all", [], then: .ok)
            try Self.config(setup, subscriptions: ["all", "keep"]).write(to: setup.configFile, atomically: true, encoding: .utf8)
            relay.signal(SIGHUP)
            #expect(await relay.waitForLog(containing: "subscription is in the config again", timeout: .seconds(10)))
            #expect(await setup.receiver.waitUntil(timeout: .seconds(60)) { $0.successesByPath["/hooks/all", default: 0] >= 25 })
            let delivered = setup.receiver.record.requests(to: "/hooks/all").filter { $0.answeredStatus == 200 }.compactMap(\.webhookID)
            #expect(delivered.count == 25 && Set(delivered).count == 25)
            let after = try RelayBinary.run(["status", "--json"] + base, environment: setup.environment, in: setup.directory)
            #expect(try JSONParser.parse(after.standardOutput).objectValue?["orphans"]?.arrayValue?.isEmpty == true, "\(after.standardOutput)")

            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
        }
    }

    static func metricsPort(_ log: String) -> Int? {
        guard let range = log.range(of: #"address=127\.0\.0\.1:[0-9]+"#, options: .regularExpression) else { return nil }
        return Int(log[range].split(separator: ":").last!)
    }

    static func metrics(_ port: Int) async throws -> String {
        let client = CurlHTTPClient()
        defer { Task { await client.shutdown() } }
        let response = try await client.execute(HTTPRequest(url: "http://127.0.0.1:\(port)/metrics"))
        return String(decoding: response.body, as: UTF8.self)
    }
}
