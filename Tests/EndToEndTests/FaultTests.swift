import Foundation
import IntilerySimulator
import RelayCore
import RelayJSON
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The guarantees of docs/architecture.md (Invariants) under faults, with the real binary as a child process; the
/// chaos tests on both stores (on PostgreSQL, a kill -9 is SeveralInstancesTests' business).
@Suite(.serialized, .timeLimit(.minutes(5))) struct FaultTests {
    static var isRoot: Bool { getuid() == 0 }

    @Test func killNineAtTenRandomMomentsLosesNothing() async throws {
        try await DaemonTests.withSetup { setup in
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.log.addBacklog(count: 10_000, from: now - 3_600_000, to: now)
            let expected = Set(setup.api.log.allEvents.map { "all:\($0.eventID)" })
            setup.receiver.script("/hooks/all", [], then: .status(200, after: .milliseconds(1)))
            try DaemonTests.config(api: setup.api, receiver: setup.receiver, subscriptions: ["all"])
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            var random = SeededRandom(seed: UInt64(now))
            var kills = 0
            for _ in 0..<10 {
                let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
                let target = setup.receiver.record.countsByPath["/hooks/all", default: 0] + Int(random.next() % 700) + 50
                _ = await setup.receiver.waitUntil(timeout: .seconds(60)) { $0.countsByPath["/hooks/all", default: 0] >= target }
                relay.signal(SIGKILL)
                _ = await relay.waitForExit(timeout: .seconds(10))
                kills += 1
            }
            let last = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            let arrived1 = await setup.receiver.waitUntil(timeout: .seconds(120)) { expected.isSubset(of: $0.countsByWebhookID.keys) }
            #expect(arrived1)
            last.signal(SIGTERM)
            #expect(await last.waitForExit(timeout: .seconds(10)) == 0)
            let counts = setup.receiver.record.countsByWebhookID
            #expect(Set(counts.keys) == expected)
            let repeats = counts.values.reduce(0) { $0 + $1 - 1 }
            // Only what was in flight at a kill may repeat: 4 requests, plus outcomes awaiting their group commit.
            print("kill -9 x\(kills): \(expected.count) events delivered, \(repeats) repeated deliveries")
            #expect(repeats <= kills * 16, "\(repeats) repeats for \(kills) kills")
        }
    }

    @Test(arguments: RelayStore.available)
    func upstreamChaosLosesNothingAndAddsNothing(_ store: RelayStore) async throws {
        try await DaemonTests.withSetup { setup in
            let (storeMember, environment) = try store.member(setup.environment)
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.update {
                $0.rateLimit = (3, 3)
                $0.faults = try! SimulatorFaults(parsing: "error=0.1,unavailable=0.1,malformed=0.1,truncated=0.1,latency=5ms")
            }
            setup.api.log.addBacklog(count: 2_000, from: now - 600_000, to: now)
            setup.api.log.startLiveTraffic(perSecond: 30, late: EventLog.LateVisibility(fraction: 0.2, delay: .seconds(5)))
            let config = #"""
                {\#(storeMember)"stateDirectory": "./state", "metrics": {"listen": "off"}, "shutdownGrace": "2s",
                 "sources": [\#(DaemonTests.sourceJSON(setup.api, lookback: "30s"))],
                 "subscriptions": [{"name": "all", "webhook": {"url": "\#(setup.receiver.url("/hooks/all"))"}}]}
                """#
            try config.write(to: setup.configFile, atomically: true, encoding: .utf8)
            let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: environment, directory: setup.directory)
            // Let live traffic run a while, then stop it and wait past the late delay for the stragglers.
            _ = await setup.receiver.waitUntil(timeout: .seconds(120)) { $0.countsByPath["/hooks/all", default: 0] >= 2_300 }
            setup.api.log.stopLiveTraffic()
            setup.api.update { $0.faults = SimulatorFaults() }
            let expected = Set(setup.api.log.allEvents.map { "all:\($0.eventID)" })
            let arrived2 = await setup.receiver.waitUntil(timeout: .seconds(120)) { expected.isSubset(of: $0.countsByWebhookID.keys) }
            #expect(arrived2)
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
            let counts = setup.receiver.record.countsByWebhookID
            #expect(Set(counts.keys) == expected, "unexpected: \(Set(counts.keys).subtracting(expected).prefix(5))")
            #expect(counts.values.allSatisfy { $0 == 1 })
            let served = setup.api.counts
            print("upstream chaos (\(store)): \(expected.count) events delivered once each; API answered \(served.byStatus.sorted { $0.key < $1.key })")
            #expect(served.rateLimited > 0, "\(served.byStatus)")
            #expect((served.byStatus[500] ?? 0) > 0 && (served.byStatus[503] ?? 0) > 0, "\(served.byStatus)")
        }
    }

    /// The same on either store: on PostgreSQL through the shared queue's claims, guards and pause.
    @Test(arguments: RelayStore.available)
    func downstreamChaosEndsAsTheRulesSayAndDeadLettersAgree(_ store: RelayStore) async throws {
        try await DaemonTests.withSetup { setup in
            let (storeMember, environment) = try store.member(setup.environment)
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.log.addBacklog(count: 40, from: now - 60_000, to: now)
            let ids = setup.api.log.allEvents.map(\.eventID)
            setup.receiver.script("/flaky", [.status(500), .status(502), .status(503)], then: .ok)
            setup.receiver.script("/busy", [.tooManyRequests(retryAfter: 1), .tooManyRequests(retryAfter: 1)], then: .ok)
            setup.receiver.script("/gone", [], then: .status(410))
            setup.receiver.script("/hang", [], then: .neverAnswer)
            setup.receiver.script("/moved", [], then: .redirect(to: "/healthy"))
            let fast = #""retry": {"maxAttempts": 6, "initialBackoff": "100ms", "maxBackoff": "300ms"}"#
            // The hanging endpoint gets two events: two timeouts each stay under the circuit breaker's threshold of
            // five, which would otherwise (rightly) slow its attempts to one probe per interval.
            let hangFilter = #""where": {"path": "eventID", "op": "in", "value": ["\#(ids[0])", "\#(ids[1])"]}, "#
            let subscriptions = ["healthy", "flaky", "busy", "gone", "hang", "moved"].map { name in
                let timeout = name == "hang" ? "200ms" : "5s"
                let retry = name == "hang" ? #""retry": {"maxAttempts": 2, "initialBackoff": "100ms", "maxBackoff": "100ms"}"# : fast
                let filter = name == "hang" ? hangFilter : ""
                return #"{"name": "\#(name)", \#(filter)"webhook": {"url": "\#(setup.receiver.url("/\(name)"))", "timeout": "\#(timeout)", \#(retry)}}"#
            }
            let config = #"""
                {\#(storeMember)"stateDirectory": "./state", "metrics": {"listen": "off"}, "shutdownGrace": "1s",
                 "sources": [\#(DaemonTests.sourceJSON(setup.api, lookback: "30s"))], "subscriptions": [\#(subscriptions.joined(separator: ","))]}
                """#
            try config.write(to: setup.configFile, atomically: true, encoding: .utf8)
            let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: environment, directory: setup.directory)
            let arrived3 = await setup.receiver.waitUntil(timeout: .seconds(60)) { record in
                ["/healthy", "/flaky", "/busy"].allSatisfy { record.successesByPath[$0, default: 0] == 40 }
            }
            #expect(arrived3)
            // gone and moved dead-letter on their first answer, and pause after 20 in a row (pauseAfter's default)
            // instead of dead-lettering all 40; hang dead-letters after 2 timeouts each.
            let deadline = ContinuousClock.now + .seconds(60)
            var letters: [JSONValue] = []
            while ContinuousClock.now < deadline {
                let list = try await RelayBinary.run(["dead-letters", "list", "--config", setup.configFile.path, "--json"], environment: environment, in: setup.directory)
                letters = try JSONParser.parse(list.standardOutput).arrayValue ?? []
                if letters.count == 42 { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
            #expect(letters.count == 42)
            let bySubscription = Dictionary(grouping: letters.compactMap(\.objectValue)) { $0["subscription"]?.stringValue ?? "" }
            #expect(bySubscription["gone"]?.allSatisfy { $0["reason"] == .string("http_410") && $0["attempts"] == .number(JSONNumber(1)) } == true)
            #expect(bySubscription["moved"]?.allSatisfy { $0["reason"] == .string("redirect_not_followed") && $0["status"] == .number(JSONNumber(302)) } == true)
            #expect(bySubscription["hang"]?.allSatisfy { $0["reason"] == .string("max_attempts (last: timeout)") && $0["attempts"] == .number(JSONNumber(2)) } == true)
            #expect(bySubscription["gone"]?.count == 20 && bySubscription["moved"]?.count == 20)
            let goneIDs: [String] = bySubscription["gone"]?.compactMap { $0["eventID"]?.stringValue } ?? []
            #expect(Set(goneIDs).isSubset(of: Set(ids)))
            let status = try await RelayBinary.run(["status", "--config", setup.configFile.path], environment: environment, in: setup.directory)
            #expect(status.standardOutput.contains("subscription gone: 20 pending"), "\(status.standardOutput)")
            #expect(status.standardOutput.contains("PAUSED since"))
            #expect(status.standardOutput.contains("paused after 20 consecutive dead letters (HTTP 410)"))
            #expect(bySubscription["healthy"] == nil && bySubscription["flaky"] == nil && bySubscription["busy"] == nil)
            let record = setup.receiver.record
            #expect(record.countsByPath["/healthy"] == 40)
            // The 20 that paused it, and at most the requests already in flight then (concurrency 4).
            #expect((20...23).contains(record.countsByPath["/gone"] ?? 0))
        }
    }

    @Test(.enabled(if: FaultTests.isRoot, "needs root to mount a read-only and a small file system"))
    func readOnlyStateDirectoryExits74() async throws {
        try await DaemonTests.withSetup { setup in
            let state = setup.directory.appendingPathComponent("ro-state")
            try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
            #expect(Self.shell("mount -t tmpfs -o ro,size=1m tmpfs '\(state.path)'") == 0)
            defer { _ = Self.shell("umount '\(state.path)'") }
            try DaemonTests.config(api: setup.api, receiver: setup.receiver, subscriptions: ["all"])
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            let relay = try RelayProcess(
                arguments: ["run", "--config", setup.configFile.path, "--state-dir", state.path], environment: setup.environment,
                directory: setup.directory)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 74)
            #expect(relay.log.contains(state.path))
        }
    }

    @Test(.enabled(if: FaultTests.isRoot, "needs root to mount a small file system"))
    func fullDiskExits74AndLosesNothingOnceSpaceReturns() async throws {
        try await DaemonTests.withSetup { setup in
            let state = setup.directory.appendingPathComponent("small-state")
            try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
            #expect(Self.shell("mount -t tmpfs -o size=1m tmpfs '\(state.path)'") == 0)
            defer { _ = Self.shell("umount '\(state.path)'") }
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.log.addBacklog(count: 6_000, from: now - 600_000, to: now)
            let expected = Set(setup.api.log.allEvents.map { "all:\($0.eventID)" })
            // The receiver is down, so the outbox fills the 1 MiB disk.
            setup.receiver.script("/hooks/all", [], then: .status(503))
            try DaemonTests.config(api: setup.api, receiver: setup.receiver, subscriptions: ["all"])
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            let arguments = ["run", "--config", setup.configFile.path, "--state-dir", state.path]
            let first = try RelayProcess(arguments: arguments, environment: setup.environment, directory: setup.directory)
            #expect(await first.waitForExit(timeout: .seconds(60)) == 74)
            #expect(first.log.contains("disk full") || first.log.contains("SQLITE_FULL"), "\(first.log.suffix(2000))")

            #expect(Self.shell("mount -o remount,size=64m '\(state.path)'") == 0)
            setup.receiver.script("/hooks/all", [], then: .ok)
            let second = try RelayProcess(arguments: arguments, environment: setup.environment, directory: setup.directory)
            let arrived4 = await setup.receiver.waitUntil(timeout: .seconds(120)) { expected.isSubset(of: $0.countsByWebhookID.keys) }
            #expect(arrived4)
            second.signal(SIGTERM)
            #expect(await second.waitForExit(timeout: .seconds(10)) == 0)
        }
    }

    static func shell(_ command: String) -> Int32 {
        ChildProcess.runQuietly("/bin/sh", ["-c", command])
    }
}
