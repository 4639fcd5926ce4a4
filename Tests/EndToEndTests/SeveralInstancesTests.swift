import Foundation
import IntilerySimulator
import Logging
import PostgresNIO
import RelayCore
import RelayPostgres
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The throwaway cluster of `scripts/with-postgres`, when the tests run under it.
enum TestPostgres {
    static let socket = ProcessInfo.processInfo.environment["RELAY_TEST_POSTGRES_SOCKET"]

    /// The relay's tables in `schema` of the cluster, for the test to read, while `body` runs.
    static func withDatabase<T>(schema: String, _ body: (RelayDatabase) async throws -> T) async throws -> T {
        let configuration = PostgresClient.Configuration(unixSocketPath: try #require(socket), username: "relay", password: nil, database: "postgres")
        let client = PostgresClient(configuration: configuration, backgroundLogger: Logger(label: "test-postgres"))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await body(RelayDatabase(client: client, schema: schema, logger: Logger(label: "test")))
        }
    }
}

/// Several relay processes sharing one PostgreSQL schema (docs/several-instances.md), with the real binary, the
/// simulator and a receiver.
@Suite(
    .serialized, .timeLimit(.minutes(5)),
    .enabled(if: TestPostgres.socket != nil, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
struct SeveralInstancesTests {
    /// The config of every instance (one source polled every `pollInterval`, one subscription, `schema` of the test
    /// cluster, its URL read from `RELAY_POSTGRES_URL`) and that URL.
    static func config(_ setup: DaemonTests.Setup, schema: String, pollInterval: String) throws -> (config: String, url: String) {
        let socket = URL(fileURLWithPath: try #require(TestPostgres.socket))
        let port = socket.pathExtension
        let url = "postgres://relay@/postgres?host=\(socket.deletingLastPathComponent().path)&port=\(port)"
        let source = DaemonTests.sourceJSON(setup.api, lookback: "5s")
            .replacingOccurrences(of: #""pollInterval": "250ms""#, with: #""pollInterval": "\#(pollInterval)""#)
        let config = #"""
            {"store": {"postgres": {"url": {"env": "RELAY_POSTGRES_URL"}, "schema": "\#(schema)"}},
             "metrics": {"listen": "off"}, "shutdownGrace": "2s",
             "sources": [\#(source)],
             "subscriptions": [{"name": "all", "webhook": {"url": "\#(setup.receiver.url("/hooks/all"))", "timeout": "5s"}}]}
            """#
        return (config, url)
    }

    /// Three instances under a backlog and a live stream; the lease holder is killed with SIGKILL mid-drain.
    /// Another takes the source within two poll intervals and polls on (events made after the kill arrive), every
    /// event arrives, the shared queue empties, and only what the killed instance had in flight arrives twice.
    @Test func killingTheLeaseHolderMidDrainLosesNothing() async throws {
        try await DaemonTests.withSetup { setup in
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.log.addBacklog(count: 3_000, from: now - 3_600_000, to: now)
            setup.api.log.startLiveTraffic(perSecond: 50)
            setup.receiver.script("/hooks/all", [], then: .status(200, after: .milliseconds(5)))
            let schema = "e2e_" + UUID().uuidString.prefix(8).lowercased()
            let (config, url) = try Self.config(setup, schema: schema, pollInterval: "1s")
            try config.write(to: setup.configFile, atomically: true, encoding: .utf8)
            var environment = setup.environment
            environment["RELAY_POSTGRES_URL"] = url

            let relays = try (0..<3).map { _ in
                try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: environment, directory: setup.directory)
            }
            let took = "took the source's lease"
            #expect(await setup.receiver.waitUntil(timeout: .seconds(60)) { $0.countsByPath["/hooks/all", default: 0] >= 1_000 })
            let holder = try #require(relays.first { $0.log.contains(took) }, "one instance polls")
            #expect(relays.filter { $0.log.contains(took) }.count == 1, "exactly one")
            holder.signal(SIGKILL)
            let killed = ContinuousClock.now
            let killedAt = Int64(Date().timeIntervalSince1970 * 1000)
            _ = await holder.waitForExit(timeout: .seconds(10))
            let others = relays.filter { $0 !== holder }
            var successor: RelayProcess?
            while successor == nil, ContinuousClock.now - killed < .seconds(10) {
                successor = others.first { $0.log.contains(took) }
                try await Task.sleep(for: .milliseconds(10))
            }
            let failover = ContinuousClock.now - killed
            #expect(successor != nil, "another instance took the source over")
            #expect(failover <= .seconds(2) + .milliseconds(300), "took \(failover), over two poll intervals (1s each)")

            // Events made after the kill arrive only if the successor polls.
            let afterKill = Set(setup.api.log.allEvents.filter { $0.timestamp > killedAt + 500 }.map { "all:\($0.eventID)" })
            _ = await setup.receiver.waitUntil(timeout: .seconds(30)) { _ in setup.api.log.allEvents.contains { $0.timestamp > killedAt + 2_000 } }
            setup.api.log.stopLiveTraffic()
            let expected = Set(setup.api.log.allEvents.map { "all:\($0.eventID)" })
            #expect(expected.count > afterKill.count && !afterKill.isEmpty)
            let arrived = await setup.receiver.waitUntil(timeout: .seconds(120)) { expected.isSubset(of: $0.countsByWebhookID.keys) }
            #expect(arrived, "every event arrived, those made after the kill too")
            // The killed instance's claims come back after their visibility timeout (2 × 5 s + 10 s) and go again.
            let emptied = try await TestPostgres.withDatabase(schema: schema) { database in
                let deadline = ContinuousClock.now + .seconds(60)
                while ContinuousClock.now < deadline {
                    if try await PostgresStatus(database).queueDepths().values.reduce(0, +) == 0 { return true }
                    try await Task.sleep(for: .milliseconds(100))
                }
                return false
            }
            #expect(emptied, "the shared queue emptied")
            for relay in others { relay.signal(SIGTERM) }
            for relay in others { #expect(await relay.waitForExit(timeout: .seconds(15)) == 0, "\(relay.log.suffix(2_000))") }
            let counts = setup.receiver.record.countsByWebhookID
            #expect(Set(counts.keys) == expected)
            let repeats = counts.values.reduce(0) { $0 + $1 - 1 }
            print("several instances, kill -9 of the lease holder: failover \(failover), \(expected.count) events, \(repeats) repeated")
            // The killed instance had at most `concurrency` (4) requests out.
            #expect(repeats <= 4, "\(repeats) repeated deliveries")
        }
    }
}
