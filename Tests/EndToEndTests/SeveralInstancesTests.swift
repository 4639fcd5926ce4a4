import CurlHTTP
import Foundation
import IntilerySimulator
import Logging
import PostgresNIO
import RelayCore
import RelayJSON
import RelayPostgres
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The throwaway cluster of `scripts/with-postgres`, when the tests run under it.
enum TestPostgres {
    static let socket = ProcessInfo.processInfo.environment["RELAY_TEST_POSTGRES_SOCKET"]

    /// The relay's tables in `schema` of the cluster, for the test to read, while `body` runs.
    static func withDatabase<T>(schema: String, socket: String? = socket, _ body: (RelayDatabase) async throws -> T) async throws -> T {
        let configuration = PostgresClient.Configuration(unixSocketPath: try #require(socket), username: "relay", password: nil, database: "postgres")
        let client = PostgresClient(configuration: configuration, backgroundLogger: Logger(label: "test-postgres"))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await body(RelayDatabase(client: client, schema: schema, logger: Logger(label: "test")))
        }
    }
}

/// The state stores a relay runs on, for the end-to-end tests that hold both to the same guarantees: SQLite
/// always, PostgreSQL under `scripts/with-postgres` (as `make test` runs).
enum RelayStore: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres

    static var available: [RelayStore] { TestPostgres.socket != nil ? allCases : [.sqlite] }
    var testDescription: String { rawValue }

    /// The config's `store` member (with its trailing comma; empty for SQLite, the default) in a fresh schema,
    /// and the environment that resolves its URL.
    func member(_ environment: [String: String]) throws -> (json: String, environment: [String: String]) {
        guard self == .postgres else { return ("", environment) }
        let socket = URL(fileURLWithPath: try #require(TestPostgres.socket))
        var environment = environment
        environment["RELAY_POSTGRES_URL"] = "postgres://relay@/postgres?host=\(socket.deletingLastPathComponent().path)&port=\(socket.pathExtension)"
        let schema = "e2e_" + UUID().uuidString.prefix(8).lowercased()
        return (#""store": {"postgres": {"url": {"env": "RELAY_POSTGRES_URL"}, "schema": "\#(schema)"}}, "#, environment)
    }
}

/// Several relay processes sharing one PostgreSQL schema (docs/several-instances.md), with the real binary, the
/// simulator and a receiver.
@Suite(
    .serialized, .timeLimit(.minutes(5)),
    .enabled(if: TestPostgres.socket != nil, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
struct SeveralInstancesTests {
    /// The source "acme" of every instance's config, polled every `pollInterval`.
    static func sourceJSON(_ setup: DaemonTests.Setup, pollInterval: String) -> String {
        DaemonTests.sourceJSON(setup.api, lookback: "5s")
            .replacingOccurrences(of: #""pollInterval": "250ms""#, with: #""pollInterval": "\#(pollInterval)""#)
    }

    /// The config of every instance (one source polled every `pollInterval`, one subscription, `schema` of the test
    /// cluster, its URL read from `RELAY_POSTGRES_URL`) and that URL.
    static func config(
        _ setup: DaemonTests.Setup, schema: String, pollInterval: String, socket: String? = TestPostgres.socket,
        subscription: String = #"{"name": "all", "webhook": {"url": "URL", "timeout": "5s"}}"#
    ) throws -> (config: String, url: String) {
        let socket = URL(fileURLWithPath: try #require(socket))
        let port = socket.pathExtension
        let url = "postgres://relay@/postgres?host=\(socket.deletingLastPathComponent().path)&port=\(port)"
        let source = Self.sourceJSON(setup, pollInterval: pollInterval)
        let config = #"""
            {"store": {"postgres": {"url": {"env": "RELAY_POSTGRES_URL"}, "schema": "\#(schema)"}},
             "metrics": {"listen": "off"}, "shutdownGrace": "2s",
             "sources": [\#(source)],
             "subscriptions": [\#(subscription.replacingOccurrences(of: "URL", with: setup.receiver.url("/hooks/all")))]}
            """#
        return (config, url)
    }

    /// Three instances under a backlog and a live stream; the lease holder is killed with SIGKILL mid-drain.
    /// Another takes the source within two poll intervals and polls on (events made after the kill arrive), every
    /// event arrives, the shared queue empties, and only what the killed instance had in flight arrives twice.
    @Test func killingTheLeaseHolderMidDrainLosesNothing() async throws {
        try await DaemonTests.withSetup { setup in
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.log.addBacklog(count: 1_500, from: now - 3_600_000, to: now)
            setup.api.log.startLiveTraffic(perSecond: 20)
            setup.receiver.script("/hooks/all", [], then: .status(200, after: .milliseconds(5)))
            let schema = "e2e_" + UUID().uuidString.prefix(8).lowercased()
            let (config, url) = try Self.config(setup, schema: schema, pollInterval: "1s")
            try config.write(to: setup.configFile, atomically: true, encoding: .utf8)
            var environment = setup.environment
            environment["RELAY_POSTGRES_URL"] = url

            let relays = try (0..<3).map { n in
                try RelayProcess(arguments: Self.run(setup, instance: n), environment: environment, directory: setup.directory)
            }
            let took = "took the source's lease"
            #expect(await setup.receiver.waitUntil(timeout: .seconds(60)) { $0.countsByPath["/hooks/all", default: 0] >= 500 })
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
            // `status` reads the shared state: who polls the source now, and the queue.
            if let successor {
                let status = try await RelayBinary.run(["status", "--config", setup.configFile.path], environment: environment)
                #expect(status.status == 0, "\(status.standardError)")
                let sourceLine = status.standardOutput.split(separator: "\n").first { $0.hasPrefix("source acme: cursor ") } ?? ""
                #expect(sourceLine.contains("; polled by ") && sourceLine.contains("/\(successor.process.pid) (epoch "), "\(status.standardOutput)")
                #expect(status.standardOutput.contains("subscription all: "), "\(status.standardOutput)")
                let json = try await RelayBinary.run(["status", "--config", setup.configFile.path, "--json"], environment: environment)
                let parsed = try JSONParser.parse(Array(json.standardOutput.utf8))
                #expect(parsed.objectValue?["store"]?.stringValue == "postgres")
                #expect(parsed.objectValue?["sources"]?.arrayValue?.first?.objectValue?["polledBy"]?.objectValue?["epoch"] != nil)
            }
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

extension SeveralInstancesTests {
    /// Two sources on one API token are one token group: one instance polls both under one lease (so the token's
    /// `rateLimit` is kept by one process), `status` names it for both, and after a kill -9 another instance takes
    /// both over.
    @Test func aTokenGroupIsPolledByOneInstance() async throws {
        try await DaemonTests.withSetup { setup in
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.log.addBacklog(count: 300, from: now - 600_000, to: now)
            setup.api.log.startLiveTraffic(perSecond: 20)
            let schema = "e2e_" + UUID().uuidString.prefix(8).lowercased()
            let (config, url) = try Self.config(setup, schema: schema, pollInterval: "1s")
            // A second source, "beta", reads the same account with the same token; each source feeds a subscription.
            let acme = Self.sourceJSON(setup, pollInterval: "1s")
            let beta = acme.replacingOccurrences(of: #""name": "acme""#, with: #""name": "beta""#)
            let subscriptions = #"{"name": "a", "source": "acme", "webhook": {"url": "\#(setup.receiver.url("/hooks/a"))"}}, "#
                + #"{"name": "b", "source": "beta", "webhook": {"url": "\#(setup.receiver.url("/hooks/b"))"}}"#
            let grouped = config.replacingOccurrences(of: "[\(acme)]", with: "[\(acme), \(beta)]")
                .replacingOccurrences(of: #""subscriptions": \[.*\]\}"#, with: #""subscriptions": [\#(subscriptions)]}"#, options: .regularExpression)
            #expect(grouped.contains(#""name": "beta""#) && grouped.contains("/hooks/b"), "\(grouped)")
            try grouped.write(to: setup.configFile, atomically: true, encoding: .utf8)
            var environment = setup.environment
            environment["RELAY_POSTGRES_URL"] = url
            let relays = try (0..<3).map { n in
                try RelayProcess(arguments: Self.run(setup, instance: n), environment: environment, directory: setup.directory)
            }
            defer { for relay in relays { relay.signal(SIGKILL) } }
            let took = "took the source's lease"
            #expect(await setup.receiver.waitUntil(timeout: .seconds(60)) {
                $0.countsByPath["/hooks/a", default: 0] >= 300 && $0.countsByPath["/hooks/b", default: 0] >= 300
            }, "both sources are polled")
            let holder = try #require(relays.first { $0.log.contains(took) }, "one instance polls")
            #expect(relays.filter { $0.log.contains(took) }.count == 1, "one instance polls both sources")
            let keys = try await TestPostgres.withDatabase(schema: schema) { try await PostgresStatus($0).holders().map(\.key) }
            #expect(keys == ["source/acme"], "one lease for the token group, named after its first source")
            let status = try await RelayBinary.run(["status", "--config", setup.configFile.path], environment: environment)
            for source in ["acme", "beta"] {
                let line = status.standardOutput.split(separator: "\n").first { $0.hasPrefix("source \(source): cursor ") } ?? ""
                #expect(line.contains("/\(holder.process.pid) (epoch "), "\(status.standardOutput)")
            }

            holder.signal(SIGKILL)
            let killedAt = Int64(Date().timeIntervalSince1970 * 1000)
            _ = await holder.waitForExit(timeout: .seconds(10))
            // Events made after the kill arrive on both paths only if the successor polls both sources.
            _ = await setup.receiver.waitUntil(timeout: .seconds(30)) { _ in setup.api.log.allEvents.contains { $0.timestamp > killedAt + 2_000 } }
            setup.api.log.stopLiveTraffic()
            let expected = Set(setup.api.log.allEvents.map(\.eventID))
            let arrived = await setup.receiver.waitUntil(timeout: .seconds(120)) { record in
                ["a", "b"].allSatisfy { name in expected.isSubset(of: Set(record.countsByWebhookID.keys.filter { $0.hasPrefix(name + ":") }.map { String($0.dropFirst(2)) })) }
            }
            #expect(arrived, "every event arrived for both subscriptions, those made after the kill too")
            #expect(relays.filter { $0 !== holder && $0.log.contains(took) }.count == 1, "one successor took the group")
        }
    }
}

extension SeveralInstancesTests {
    /// `replay` with a PostgreSQL config, run while three instances deliver: the one polling the source reads the
    /// range again and any instance delivers it, each replayed event once more under its first `webhook-id`.
    @Test func aReplayIsCarriedOutByWhicheverInstancePollsTheSource() async throws {
        try await DaemonTests.withSetup { setup in
            setup.receiver.script("/hooks/all", [], then: .status(200, after: .milliseconds(2)))
            try await Self.withThreeInstances(setup, backlog: 300) { _, schema in
                #expect(await setup.receiver.waitUntil(timeout: .seconds(60)) { $0.successesByPath["/hooks/all", default: 0] >= 300 })
                let backlog = setup.api.log.allEvents.prefix(300).sorted { $0.timestamp < $1.timestamp }
                let since = Timestamp(millisecondsSinceEpoch: backlog[100].timestamp)
                let until = Timestamp(millisecondsSinceEpoch: backlog[200].timestamp)
                let inRange = Set(backlog.filter { $0.timestamp >= since.millisecondsSinceEpoch && $0.timestamp < until.millisecondsSinceEpoch }.map(\.eventID))
                let firstIDs = Dictionary(
                    setup.receiver.record.requests(to: "/hooks/all").compactMap { request in
                        (try? JSONParser.parse(request.body))?.objectValue?["eventID"]?.stringValue.map { ($0, request.webhookID ?? "") }
                    }, uniquingKeysWith: { first, _ in first })
                var environment = setup.environment
                environment["RELAY_POSTGRES_URL"] = try Self.config(setup, schema: schema, pollInterval: "1s").url
                let replay = try await RelayBinary.run(
                    ["replay", "--config", setup.configFile.path, "--subscription", "all", "--since", since.iso8601, "--until", until.iso8601, "--wait"],
                    environment: environment)
                #expect(replay.status == 0, "\(replay.standardError)")
                // The range is one full page (100 events): an instance that takes the source over after it goes on
                // from the page's last event, which it must not queue again (seen on CI before ReadBoundary).
                #expect(replay.standardOutput.contains(": \(inRange.count) events queued."), "\(replay.standardOutput)")
                #expect(await setup.receiver.waitUntil(timeout: .seconds(30)) { record in
                    let again = record.requests(to: "/hooks/all").compactMap { (try? JSONParser.parse($0.body))?.objectValue?["eventID"]?.stringValue }
                    return again.filter(inRange.contains).count >= 2 * inRange.count
                })
                let requests = setup.receiver.record.requests(to: "/hooks/all")
                let replayed = requests.compactMap { request -> (String, String?)? in
                    guard let id = (try? JSONParser.parse(request.body))?.objectValue?["eventID"]?.stringValue, inRange.contains(id) else { return nil }
                    return (id, request.webhookID)
                }
                #expect(replayed.count == 2 * inRange.count, "each event in the range once more")
                #expect(replayed.allSatisfy { firstIDs[$0.0] == $0.1 }, "under the webhook-id it first went with")
            }
        }
    }

    /// An instance's `/metrics` on PostgreSQL: the shared queue's gauges read from the database when scraped (as
    /// on SQLite, so the shipped alerts work), whether this instance polls the source, and promtool's approval.
    @Test func anInstancesMetricsShowTheSharedQueueWhenScraped() async throws {
        try await DaemonTests.withSetup { setup in
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.log.addBacklog(count: 50, from: now - 600_000, to: now - 60_000)
            // Every event dead-lettered: the 20th in a row (pauseAfter's default) pauses the subscription.
            setup.receiver.script("/hooks/all", [], then: .status(400))
            let schema = "e2e_" + UUID().uuidString.prefix(8).lowercased()
            let (config, url) = try Self.config(setup, schema: schema, pollInterval: "1s")
            try config.replacingOccurrences(of: #""listen": "off""#, with: #""listen": "127.0.0.1:0""#)
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            var environment = setup.environment
            environment["RELAY_POSTGRES_URL"] = url
            let relay = try RelayProcess(
                arguments: ["run", "--config", setup.configFile.path, "--log-level", "trace"], environment: environment, directory: setup.directory)
            defer { relay.signal(SIGKILL) }
            #expect(await relay.waitForLog(containing: "metrics listening", timeout: .seconds(30)))
            let port = try #require(SubscriptionCursorDaemonTests.metricsPort(relay.log))
            #expect(await relay.waitForLog(containing: "consecutive dead letters", timeout: .seconds(30)), "\(relay.log)")
            // --log-level trace: a line for each request, as on SQLite.
            let requestDone = relay.log.split(separator: "\n").first { $0.contains(#"msg="request done""#) }
            #expect(requestDone.map { $0.contains("status=400") && $0.contains("outcome=dead_letter") && $0.contains("attempt=1") } == true,
                    "\(relay.log)")
            func value(_ series: String, in page: String) -> Double? {
                page.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
            }
            // Scraped until the outcomes out at the pause are recorded: 20 dead letters, nothing in flight.
            var page = ""
            let deadline = ContinuousClock.now + .seconds(30)
            repeat {
                page = try await SubscriptionCursorDaemonTests.metrics(port)
                if value(#"intilery_relay_dead_letters{subscription="all"}"#, in: page) == 20,
                    value(#"intilery_relay_requests_in_flight{subscription="all"}"#, in: page) == 0 { break }
                try await Task.sleep(for: .milliseconds(100))
            } while ContinuousClock.now < deadline
            for (series, expected) in [
                (#"intilery_relay_dead_letters{subscription="all"}"#, 20.0), (#"intilery_relay_outbox_depth{subscription="all"}"#, 30),
                (#"intilery_relay_subscription_paused{subscription="all"}"#, 1), (#"intilery_relay_source_lease_held{source="acme"}"#, 1),
                (#"intilery_relay_requests_in_flight{subscription="all"}"#, 0),
            ] {
                #expect(value(series, in: page) == expected, "\(series) in\n\(page)")
            }
            #expect((value(#"intilery_relay_outbox_oldest_age_seconds{subscription="all"}"#, in: page) ?? 0) >= 60)
            let check = try await MetricsPageTests.promtool(["check", "metrics"], input: Array(page.utf8))
            #expect(check.status == 0 && check.output.isEmpty, "promtool check metrics:\n\(check.output)")
        }
    }

    /// `intilery-relay reload` against an instance on PostgreSQL: a valid config replaces the running one (a new
    /// subscription with `startFrom: earliest` backfills the hour the shared poll passed long ago, then receives
    /// live events), an invalid one is rejected with its problems and the running one stays.
    @Test func aReloadOnPostgresAppliesAValidConfigAndRejectsABadOne() async throws {
        try await DaemonTests.withSetup { setup in
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.log.addBacklog(count: 200, from: now - 3_600_000, to: now - 600_000)
            let backlog = Set(setup.api.log.allEvents.map(\.eventID))
            setup.api.log.startLiveTraffic(perSecond: 20)
            let schema = "e2e_" + UUID().uuidString.prefix(8).lowercased()
            let (config, url) = try Self.config(setup, schema: schema, pollInterval: "1s")
            try config.write(to: setup.configFile, atomically: true, encoding: .utf8)
            var environment = setup.environment
            environment["RELAY_POSTGRES_URL"] = url
            let arguments = Self.run(setup, instance: 0)
            let relay = try RelayProcess(arguments: arguments, environment: environment, directory: setup.directory)
            defer { relay.signal(SIGKILL) }
            #expect(await setup.receiver.waitUntil { $0.successesByPath["/hooks/all", default: 0] >= 205 })
            let reload = ["reload", "--config", setup.configFile.path] + arguments.suffix(2)

            // A second subscription: applied, it reads the backlog on its own, and receives what is made after.
            let more = #"{"name": "more", "startFrom": "earliest", "webhook": {"url": "\#(setup.receiver.url("/hooks/more"))", "timeout": "5s"}}"#
            let withMore = config.replacingOccurrences(of: #"}}]}"#, with: #"}}, \#(more)]}"#)
            #expect(withMore != config)
            try withMore.write(to: setup.configFile, atomically: true, encoding: .utf8)
            let applied = try await RelayBinary.run(reload, environment: environment)
            #expect(applied.status == 0 && applied.standardOutput.hasPrefix("Reloaded"), "\(applied.standardOutput)\(applied.standardError)\n\(relay.log)")
            #expect(await setup.receiver.waitUntil(timeout: .seconds(120)) { record in
                let got = Set(record.requests(to: "/hooks/more").compactMap { (try? JSONParser.parse($0.body))?.objectValue?["eventID"]?.stringValue })
                return backlog.isSubset(of: got) && got.count >= backlog.count + 10
            }, "\(relay.log)")
            let toMore = setup.receiver.record.requests(to: "/hooks/more").compactMap { (try? JSONParser.parse($0.body))?.objectValue?["eventID"]?.stringValue }
            #expect(backlog.isSubset(of: Set(toMore)), "\(backlog.subtracting(toMore).count) backlog events missing")
            #expect(toMore.count == Set(toMore).count, "each once")
            #expect(relay.log.contains("new subscription: reading its events from startFrom on its own"))

            // A bad one: rejected with its problem, and both subscriptions keep receiving.
            try withMore.replacingOccurrences(of: #""pollInterval": "1s""#, with: #""pollInterval": "soon""#)
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            let rejected = try await RelayBinary.run(reload, environment: environment)
            #expect(rejected.status == 78 && rejected.standardError.contains("pollInterval"), "\(rejected.standardError)")
            let before = setup.receiver.record.successesByPath
            #expect(await setup.receiver.waitUntil {
                $0.successesByPath["/hooks/more", default: 0] > before["/hooks/more", default: 0] + 5
                    && $0.successesByPath["/hooks/all", default: 0] > before["/hooks/all", default: 0] + 5
            })

            // A second instance with the same state directory is refused: reload would not know which to signal.
            try withMore.write(to: setup.configFile, atomically: true, encoding: .utf8)
            let twin = try await RelayBinary.run(arguments, environment: environment, in: setup.directory)
            #expect(twin.status == 75 && twin.standardError.contains("state directory of its own"), "\(twin.standardError)")
        }
    }

    /// `run` for instance `n`: each instance on a machine has a state directory of its own (its lock and reload
    /// answers).
    static func run(_ setup: DaemonTests.Setup, instance n: Int) -> [String] {
        ["run", "--config", setup.configFile.path, "--state-dir", setup.directory.appendingPathComponent("instance-\(n)").path]
    }

    /// Whether every instance's `/readyz` (on `ports`) answered a status for which `wanted` holds, within `limit`:
    /// each asked every 100 ms until it does.
    static func readyz(_ ports: [Int], within limit: Duration, _ wanted: (Int) -> Bool) async throws -> Bool {
        let client = CurlHTTPClient()
        defer { Task { await client.shutdown() } }
        let deadline = ContinuousClock.now + limit
        var waiting = Set(ports)
        while !waiting.isEmpty, ContinuousClock.now < deadline {
            for port in waiting {
                let response = try await client.execute(HTTPRequest(url: "http://127.0.0.1:\(port)/readyz", timeout: .seconds(1)))
                if wanted(response.status) { waiting.remove(port) }
            }
            if !waiting.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
        }
        return waiting.isEmpty
    }

    /// `metrics`: each instance serves /metrics and /readyz on a port of its own, which its log names.
    static func withThreeInstances(
        _ setup: DaemonTests.Setup, backlog: Int = 1_500, subscription: String = #"{"name": "all", "webhook": {"url": "URL", "timeout": "5s"}}"#,
        socket: String? = TestPostgres.socket, metrics: Bool = false, _ body: ([RelayProcess], String) async throws -> Void
    ) async throws {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        setup.api.log.addBacklog(count: backlog, from: now - 3_600_000, to: now)
        setup.api.log.startLiveTraffic(perSecond: 20)
        let schema = "e2e_" + UUID().uuidString.prefix(8).lowercased()
        let (config, url) = try Self.config(setup, schema: schema, pollInterval: "1s", socket: socket, subscription: subscription)
        try (metrics ? config.replacingOccurrences(of: #""listen": "off""#, with: #""listen": "127.0.0.1:0""#) : config)
            .write(to: setup.configFile, atomically: true, encoding: .utf8)
        var environment = setup.environment
        environment["RELAY_POSTGRES_URL"] = url
        let relays = try (0..<3).map { n in
            try RelayProcess(arguments: Self.run(setup, instance: n), environment: environment, directory: setup.directory)
        }
        do {
            try await body(relays, schema)
        } catch {
            for relay in relays { relay.signal(SIGKILL) }
            throw error
        }
        for relay in relays { relay.signal(SIGKILL) }
        for relay in relays { _ = await relay.waitForExit(timeout: .seconds(10)) }
    }

    static let took = "took the source's lease"

    /// The events in each request's body, in arrival order: one event, or a batch's array.
    static func eventIDs(in record: WebhookReceiver.Record) -> [String] {
        record.requests(to: "/hooks/all").flatMap { request -> [String] in
            guard let body = try? JSONParser.parse(request.body) else { return [] }
            let events = body.arrayValue ?? [body]
            return events.compactMap { $0.objectValue?["eventID"]?.stringValue }
        }
    }

    /// Waits until the source's cursor has passed every event the API holds (its live stream stopped) and the
    /// shared queue is empty, then expects each of them to have arrived; how many arrived more than once.
    @discardableResult
    static func expectEverythingDelivered(
        _ setup: DaemonTests.Setup, schema: String, socket: String? = TestPostgres.socket
    ) async throws -> Int {
        setup.api.log.stopLiveTraffic()
        let events = setup.api.log.allEvents
        let expected = Set(events.map(\.eventID))
        let newest = events.map(\.timestamp).max() ?? 0
        let done = try await TestPostgres.withDatabase(schema: schema, socket: socket) { database in
            let deadline = ContinuousClock.now + .seconds(120)
            while ContinuousClock.now < deadline {
                let cursor = try await PostgresLeases(database).cursor(of: "acme") ?? 0
                if cursor > newest, try await PostgresStatus(database).queueDepths().values.reduce(0, +) == 0 { return true }
                try await Task.sleep(for: .milliseconds(100))
            }
            return false
        }
        #expect(done, "the cursor passed the last event and the shared queue emptied")
        let ids = Self.eventIDs(in: setup.receiver.record)
        let missing = expected.subtracting(ids)
        #expect(missing.isEmpty, "\(missing.count) of \(expected.count) events never arrived, such as \(missing.prefix(5).sorted())")
        #expect(Set(ids).subtracting(expected).isEmpty, "only the API's events arrived")
        return ids.count - Set(ids).count
    }

    /// The lease holder frozen (SIGSTOP) for twice its lease, then thawed: another instance polls meanwhile, the
    /// frozen one's late writes are refused, the cursor (sampled every 100 ms) never moves back, and nothing is
    /// queued twice.
    @Test func aFrozenHolderThawedLateWritesNothing() async throws {
        try await DaemonTests.withSetup { setup in
            setup.receiver.script("/hooks/all", [], then: .status(200, after: .milliseconds(5)))
            try await Self.withThreeInstances(setup) { relays, schema in
                #expect(await setup.receiver.waitUntil(timeout: .seconds(60)) { $0.countsByPath["/hooks/all", default: 0] >= 300 })
                let holder = try #require(relays.first { $0.log.contains(Self.took) })
                let samples = try await TestPostgres.withDatabase(schema: schema) { database in
                    let leases = PostgresLeases(database)
                    var samples: [Int64] = []
                    func sample(for duration: Duration, orUntil done: () -> Bool = { false }) async throws {
                        let end = ContinuousClock.now + duration
                        while ContinuousClock.now < end, !done() {
                            if let position = try await leases.cursor(of: "acme") { samples.append(position) }
                            try await Task.sleep(for: .milliseconds(100))
                        }
                    }
                    let anotherPolls = { relays.filter { $0 !== holder }.contains { $0.log.contains(Self.took) } }
                    try await sample(for: .seconds(1))
                    holder.signal(SIGSTOP)
                    // At least twice the lease (1.25 s for a 1 s poll interval), and on until another instance has
                    // taken it: one frozen in the middle of a commit holds the lease row until the server ends its
                    // transaction (5 s idle), and the late writes this test is about only exist once another holds it.
                    try await sample(for: .milliseconds(2_500))
                    try await sample(for: .seconds(20), orUntil: anotherPolls)
                    #expect(anotherPolls(), "another instance polls")
                    holder.signal(SIGCONT)
                    try await sample(for: .seconds(3))
                    return samples
                }
                // The thawed one learns it no longer holds the lease: a renewal or a fenced write is refused (LeaseLost),
                // or, when the server ended its frozen transaction's connection or a query's deadline passed while it
                // was frozen, the store errs. Either way it stops polling and tries to take the lease again.
                let learned = await holder.waitForLog(
                    containingAnyOf: ["lost the source's lease", "polling stopped on a store error"], timeout: .seconds(10))
                #expect(learned, "the thawed one learns it lost; its log ends: \(holder.log.suffix(1_500))")
                #expect(samples.count >= 20, "sampled often enough to see a step back")
                #expect(zip(samples, samples.dropFirst()).allSatisfy { $0 <= $1 }, "the cursor never moved back: \(samples)")
                let repeats = try await Self.expectEverythingDelivered(setup, schema: schema)
                print("several instances, SIGSTOP of the lease holder for twice its lease: \(repeats) repeated")
                #expect(repeats <= 4, "nothing queued twice; at most what the frozen one had out may go again")
            }
        }
    }

    /// A strict subscription delivered by three instances, one of them killed mid-drain: the receiver sees every
    /// event in order, and a request only after the one before it was answered.
    @Test func strictOrderHoldsAcrossThreeInstancesAndAKill() async throws {
        try await DaemonTests.withSetup { setup in
            setup.receiver.script("/hooks/all", [], then: .status(200, after: .milliseconds(2)))
            let strict = #"{"name": "all", "webhook": {"url": "URL", "timeout": "5s", "ordering": "strict", "batchSize": 5}}"#
            try await Self.withThreeInstances(setup, backlog: 1_500, subscription: strict) { relays, schema in
                #expect(await setup.receiver.waitUntil(timeout: .seconds(60)) { $0.countsByPath["/hooks/all", default: 0] >= 60 })
                relays[0].signal(SIGKILL)
                try await Self.expectEverythingDelivered(setup, schema: schema)
                let times = setup.api.log.allEvents.reduce(into: [String: Int64]()) { $0[$1.eventID] = $1.timestamp }
                var last: (time: Int64, id: String) = (.min, "")
                var order: [(Int64, String)] = []
                for request in setup.receiver.record.requests(to: "/hooks/all") {
                    guard let body = try? JSONParser.parse(request.body), let events = body.arrayValue ?? body.objectValue.map({ [JSONValue.object($0)] })
                    else { continue }
                    for event in events {
                        guard let id = event.objectValue?["eventID"]?.stringValue, let time = times[id] else { continue }
                        order.append((time, id))
                    }
                }
                // A request repeated after the kill may go again; the first arrival of each event is in time order.
                var seen: Set<String> = []
                var violations = 0
                for (time, id) in order where seen.insert(id).inserted {
                    if time < last.time { violations += 1 }
                    last = (time, id)
                }
                #expect(violations == 0, "\(violations) events arrived before one earlier in time")
            }
        }
    }
}

extension SeveralInstancesTests {
    /// Runs `pg_ctl` on the cluster in `data` as its owner (`postgres` when the tests run as root).
    static func pgctl(_ arguments: [String], data: String) async throws -> Int32? {
        let environment = ProcessInfo.processInfo.environment
        let bin = try #require(environment["RELAY_TEST_POSTGRES_BIN"])
        let runAs = (environment["RELAY_TEST_POSTGRES_AS"] ?? "").split(separator: " ").map(String.init)
        let command = runAs + ["\(bin)/pg_ctl", "-D", data] + arguments
        let discard = try #require(FileHandle(forWritingAtPath: "/dev/null"))
        defer { try? discard.close() }
        let process = try ChildProcess(
            command[0].hasPrefix("/") ? command[0] : "/usr/bin/env", command[0].hasPrefix("/") ? Array(command.dropFirst()) : command,
            environment: environment, directory: "/", stdin: nil, stdout: discard.fileDescriptor, stderr: discard.fileDescriptor)
        while process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        return process.status
    }

    /// PostgreSQL stopped at once (`pg_ctl -m immediate`, as a crash would) mid-drain and started again 3 s later:
    /// every instance carries on by itself, and every event arrives. On a cluster of its own.
    @Test func aDatabaseRestartMidDrainIsRiddenOut() async throws {
        try await DaemonTests.withSetup { setup in
            let cluster = try await PrivateCluster(in: setup.directory)
            setup.receiver.script("/hooks/all", [], then: .status(200, after: .milliseconds(5)))
            do {
                try await restart(cluster, setup)
            } catch {
                await cluster.stop()
                throw error
            }
            await cluster.stop()
        }
    }

    private func restart(_ cluster: PrivateCluster, _ setup: DaemonTests.Setup) async throws {
        try await Self.withThreeInstances(setup, socket: cluster.socket, metrics: true) { relays, schema in
            var ports: [Int] = []
            for relay in relays {
                #expect(await relay.waitForLog(containing: "metrics listening", timeout: .seconds(30)))
                ports.append(try #require(SubscriptionCursorDaemonTests.metricsPort(relay.log)))
            }
            #expect(await setup.receiver.waitUntil(timeout: .seconds(60)) { $0.countsByPath["/hooks/all", default: 0] >= 300 })
            #expect(try await Self.readyz(ports, within: .seconds(10)) { $0 == 200 }, "every instance ready before the outage")
            #expect(try await Self.pgctl(["-m", "immediate", "stop"], data: cluster.data) == 0)
            let stopped = ContinuousClock.now
            let during = setup.receiver.record.countsByPath["/hooks/all", default: 0]
            // Each instance says it is not ready while the database is away: its first failed call does it (a
            // lease is renewed or tried for several times a second), well within the 3 s of the outage.
            let notReady = try await Self.readyz(ports, within: .seconds(3)) { $0 == 503 }
            #expect(notReady, "every instance's /readyz is 503 while the database is away")
            // The outage lasts 3 s whatever that took.
            try await Task.sleep(until: stopped + .seconds(3))
            #expect(try await Self.pgctl(["-l", cluster.data + "/../restart.log", "-w", "start"], data: cluster.data) == 0)
            #expect(relays.allSatisfy { $0.process.isRunning }, "no instance exited while the database was away")
            // And each one recovers by itself.
            #expect(try await Self.readyz(ports, within: .seconds(30)) { $0 == 200 }, "every instance ready again")
            #expect(relays.contains { $0.log.contains("cannot reach PostgreSQL") || $0.log.contains("could not claim deliveries") }, "the outage was logged")
            let repeats = try await Self.expectEverythingDelivered(setup, schema: schema, socket: cluster.socket)
            let after = setup.receiver.record.countsByPath["/hooks/all", default: 0]
            print("several instances, PostgreSQL restarted mid-drain: \(during) delivered before, \(after - during) after, \(repeats) repeated")
            // What was out when it stopped (4 places in each instance) goes again, and no more.
            #expect(repeats <= 3 * 4, "\(repeats) repeated deliveries")
            #expect(relays.allSatisfy { $0.process.isRunning })
        }
    }
}

extension SeveralInstancesTests {
    /// The receiver stalls (never answers) for 3 s and an instance with requests out is killed meanwhile: its
    /// claims go to the others once their visibility timeout (2 × 5 s + 10 s) passes, and every event arrives.
    @Test func aDelivererKilledWhileTheReceiverStallsLosesNothing() async throws {
        try await DaemonTests.withSetup { setup in
            setup.receiver.script("/hooks/all", [], then: .status(200, after: .milliseconds(5)))
            try await Self.withThreeInstances(setup, backlog: 1_000) { relays, schema in
                #expect(await setup.receiver.waitUntil(timeout: .seconds(60)) { $0.countsByPath["/hooks/all", default: 0] >= 200 })
                setup.receiver.outage("/hooks/all", until: Int64(Date().timeIntervalSince1970 * 1000) + 3_000, reply: .neverAnswer)
                let inFlight = try await TestPostgres.withDatabase(schema: schema) { database in
                    // Every instance's places fill with requests that get no answer.
                    let deadline = ContinuousClock.now + .seconds(10)
                    var held: [PostgresStatus.InFlight] = []
                    while ContinuousClock.now < deadline {
                        held = try await PostgresStatus(database).inFlight()
                        if held.count == 3, held.allSatisfy({ $0.requests == 4 }) { break }
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    return held
                }
                // The instances name themselves host/pid: the victim is the first relay process.
                let victim = relays[0]
                let claims = inFlight.first { $0.instance.hasSuffix("/\(victim.process.pid)") }?.requests ?? 0
                #expect(claims > 0, "the killed instance had claims out: \(inFlight)")
                victim.signal(SIGKILL)
                let repeats = try await Self.expectEverythingDelivered(setup, schema: schema)
                print("several instances, a deliverer killed while the receiver stalled: \(claims) claims taken over, \(repeats) repeated")
                // Each request that got no answer goes once more: the survivors' after their timeout, the victim's
                // after their claims expired.
                #expect(repeats <= 3 * 4, "\(repeats) repeated deliveries")
            }
        }
    }
}

/// A cluster of its own, for a test that restarts it: the tests running beside it keep theirs. Started with
/// `scripts/with-postgres`, which removes it when its standard input closes.
final class PrivateCluster {
    let process: ChildProcess
    let input: Int32
    let socket: String
    var data: String { URL(fileURLWithPath: socket).deletingLastPathComponent().appendingPathComponent("data").path }

    init(in directory: URL) async throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let log = directory.appendingPathComponent("private-cluster.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        defer { try? handle.close() }
        let pipe = try closeOnExecPipe()
        process = try ChildProcess(
            repository.appendingPathComponent("scripts/with-postgres").path, ["sh", "-c", "cat >/dev/null"], environment: nil,
            directory: directory.path, stdin: pipe.read, stdout: handle.fileDescriptor, stderr: handle.fileDescriptor)
        close(pipe.read)
        input = pipe.write
        let deadline = ContinuousClock.now + .seconds(60)
        var found: String?
        while found == nil, ContinuousClock.now < deadline, process.isRunning {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            found = text.split(separator: "\n").first { $0.hasPrefix("with-postgres: ") }?.split(separator: " ").last.map(String.init)
            try await Task.sleep(for: .milliseconds(50))
        }
        socket = try #require(found, "the private cluster did not start: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
    }

    /// Closes its input: the script stops the server and removes its directory.
    func stop() async {
        close(input)
        while process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
    }
}
