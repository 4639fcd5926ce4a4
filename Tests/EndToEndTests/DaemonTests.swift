import Foundation
import IntilerySimulator
import RelayCore
import RelayJSON
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The real `intilery-relay run` binary against the simulator and receiver on loopback.
@Suite(.serialized, .timeLimit(.minutes(3))) struct DaemonTests {
    static func config(api: FakeEventsAPI, receiver: WebhookReceiver, subscriptions: [String]) -> String {
        let subs = subscriptions.map { name in
            #"{"name": "\#(name)", "webhook": {"url": "\#(receiver.url("/hooks/\(name)"))", "timeout": "5s"}}"#
        }.joined(separator: ", ")
        return #"""
            {"stateDirectory": "./state", "metrics": {"listen": "off"}, "shutdownGrace": "2s",
             "sources": [\#(sourceJSON(api, lookback: "5s"))],
             "subscriptions": [\#(subs)]}
            """#
    }

    /// The simulator as the one source, its token read from `INTILERY_TOKEN` (see ``Setup/environment``).
    static func sourceJSON(_ api: FakeEventsAPI, lookback: String) -> String {
        #"{"name": "acme", "baseURL": "\#(api.baseURL)", "clientId": "acme", "accountId": "acme", "brandId": "ACME", "authToken": {"env": "INTILERY_TOKEN"}, "startFrom": "earliest", "pollInterval": "250ms", "lookback": "\#(lookback)"}"#
    }

    struct Setup {
        let directory: URL
        let api: FakeEventsAPI
        let receiver: WebhookReceiver
        var configFile: URL { directory.appendingPathComponent("config.json") }
        var environment: [String: String] { ["INTILERY_TOKEN": api.account.authToken] }
    }

    /// A backlog of `count` events over the last `span` ms, one subscription "all" answering 200 after `delay`,
    /// the config written; returns the webhook-ids expected.
    static func drainAll(_ setup: Setup, count: Int, span: Int64, delay: Duration) throws -> Set<String> {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        setup.api.log.addBacklog(count: count, from: now - span, to: now)
        setup.receiver.script("/hooks/all", [], then: .status(200, after: delay))
        try config(api: setup.api, receiver: setup.receiver, subscriptions: ["all"])
            .write(to: setup.configFile, atomically: true, encoding: .utf8)
        return Set(setup.api.log.allEvents.map { "all:\($0.eventID)" })
    }

    static func withSetup(_ body: (Setup) async throws -> Void) async throws {
        try await withTemporaryDirectory { directory in
            var settings = FakeEventsAPI.Settings()
            settings.rateLimit = nil
            let api = try await FakeEventsAPI.start(settings: settings)
            let receiver = try await WebhookReceiver.start()
            do {
                try await body(Setup(directory: directory, api: api, receiver: receiver))
            } catch {
                try await api.shutdown()
                try await receiver.shutdown()
                _ = StartedConfigs.take(directory: directory)
                throw error
            }
            try await api.shutdown()
            try await receiver.shutdown()
            // Every config the relay was started with: the JSON Schema must give check-config's verdict on it.
            let started = Dictionary(grouping: StartedConfigs.take(directory: directory), by: \.environment)
            for (environment, configs) in started {
                try await CheckConfigTests.expectTheSchemaAgrees(configs.map(\.copy.path), environment: environment, in: directory)
            }
        }
    }

    @Test func sigtermMidDrainExitsZeroWithinTheGraceAndARestartFinishesWithNothingMissing() async throws {
        try await Self.withSetup { setup in
            // Slow enough that a SIGTERM lands mid-drain even when the test itself runs late on a loaded machine:
            // after the first 300, the rest takes 13 s at least.
            let expected = try Self.drainAll(setup, count: 3_000, span: 3_600_000, delay: .milliseconds(20))
            let first = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            #expect(await setup.receiver.waitUntil { $0.countsByPath["/hooks/all", default: 0] >= 300 })
            let signalled = ContinuousClock.now
            first.signal(SIGTERM)
            let status = await first.waitForExit(timeout: .seconds(10))
            #expect(status == 0, "\(first.log)")
            #expect(ContinuousClock.now - signalled < .seconds(2) + .seconds(3))
            let deliveredBefore = Set(setup.receiver.record.countsByWebhookID.keys)
            #expect(deliveredBefore.count < expected.count, "the SIGTERM came too late to test anything")

            let second = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            #expect(await setup.receiver.waitUntil(timeout: .seconds(90)) { expected.isSubset(of: $0.countsByWebhookID.keys) })
            second.signal(SIGTERM)
            #expect(await second.waitForExit(timeout: .seconds(10)) == 0)
            let counts = setup.receiver.record.countsByWebhookID
            #expect(Set(counts.keys) == expected)
            let duplicates = counts.values.filter { $0 > 1 }.count
            // At least once: only deliveries in flight at the stop may repeat (4 slots).
            #expect(duplicates <= 4, "duplicates: \(duplicates)")
        }
    }

    @Test func stopsAndReloadsMidDrainRepeatNothing() async throws {
        try await Self.withSetup { setup in
            let expected = try Self.drainAll(setup, count: 6_000, span: 600_000, delay: .milliseconds(2))
            let arguments = ["run", "--config", setup.configFile.path]
            func delivered() -> Int { setup.receiver.record.countsByPath["/hooks/all", default: 0] }
            // Twenty graceful stops, each with deliveries in flight.
            for round in 0..<20 {
                let relay = try RelayProcess(arguments: arguments, environment: setup.environment, directory: setup.directory)
                let target = delivered() + 40
                #expect(await setup.receiver.waitUntil { $0.countsByPath["/hooks/all", default: 0] >= target }, "round \(round)")
                relay.signal(SIGTERM)
                #expect(await relay.waitForExit(timeout: .seconds(10)) == 0, "\(relay.log)")
            }
            // Twenty reloads of the same config, in one run.
            let relay = try RelayProcess(arguments: arguments, environment: setup.environment, directory: setup.directory)
            for round in 0..<20 {
                let target = delivered() + 40
                #expect(await setup.receiver.waitUntil { $0.countsByPath["/hooks/all", default: 0] >= target }, "reload \(round)")
                relay.signal(SIGHUP)
            }
            #expect(await setup.receiver.waitUntil(timeout: .seconds(60)) { expected.isSubset(of: $0.countsByWebhookID.keys) })
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
            let counts = setup.receiver.record.countsByWebhookID
            #expect(Set(counts.keys) == expected)
            let repeated = counts.filter { $0.value > 1 }
            #expect(repeated.isEmpty, "repeated: \(repeated.count), e.g. \(repeated.keys.sorted().prefix(3))")
        }
    }

    @Test func aThrottlingReceiverGetsThreeHundredEventsWithinFifteenSeconds() async throws {
        try await Self.withSetup { setup in
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.log.addBacklog(count: 300, from: now - 60_000, to: now)
            let expected = Set(setup.api.log.allEvents.map { "t:\($0.eventID)" })
            // A rate-limited catch hook: each event's first two attempts get 429 with Retry-After: 1.
            setup.receiver.scriptEachID("/hooks/t", [.tooManyRequests(retryAfter: 1), .tooManyRequests(retryAfter: 1)])
            let config = #"""
                {"stateDirectory": "./state", "metrics": {"listen": "off"},
                 "sources": [\#(Self.sourceJSON(setup.api, lookback: "5s"))],
                 "subscriptions": [{"name": "t", "webhook": {"url": "\#(setup.receiver.url("/hooks/t"))", "concurrency": 100}}]}
                """#
            try config.write(to: setup.configFile, atomically: true, encoding: .utf8)
            let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            #expect(await setup.receiver.waitUntil(timeout: .seconds(30)) { record in
                expected.allSatisfy { record.countsByWebhookID[$0] == 3 }
            })
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
            let requests = setup.receiver.record.requests(to: "/hooks/t")
            let first = try #require(requests.first?.receivedAt)
            let lastSuccess = try #require(requests.filter { $0.answeredStatus == 200 }.map(\.receivedAt).max())
            #expect(lastSuccess - first < 15_000, "took \(lastSuccess - first) ms")
            #expect(requests.count == 900)
            #expect(!relay.log.contains("circuit open"))
            // No event was tried again before its Retry-After. (That the whole URL waits is checked on the test
            // clock in FlowControlTests: here a burst of 100 takes long enough to blur which 429 a request followed.)
            var attempts: [String: [Int64]] = [:]
            for request in requests { attempts[request.webhookID ?? "", default: []].append(request.receivedAt) }
            for times in attempts.values {
                #expect(zip(times, times.dropFirst()).allSatisfy { $1 - $0 >= 1_000 - 5 }, "\(times)")
            }
        }
    }

    @Test func strictBatchesKeepOrderAndIDsWithLateRows() async throws {
        try await Self.withSetup { setup in
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            // 40 events, a quarter of them visible only 2 s after their time (caught within the 5 s lookback).
            setup.api.log.addBacklog(
                count: 40, from: now - 20_000, to: now, late: EventLog.LateVisibility(fraction: 0.25, delay: .seconds(2)))
            let events = setup.api.log.allEvents
            setup.receiver.script("/hooks/s", [.status(503), .status(503)], then: .ok)
            let config = #"""
                {"stateDirectory": "./state", "metrics": {"listen": "off"},
                 "sources": [\#(Self.sourceJSON(setup.api, lookback: "5s"))],
                 "subscriptions": [{"name": "s", "webhook": {"url": "\#(setup.receiver.url("/hooks/s"))", "batchSize": 5,
                   "ordering": "strict", "retry": {"initialBackoff": "200ms", "maxBackoff": "400ms"}}}]}
                """#
            try config.write(to: setup.configFile, atomically: true, encoding: .utf8)
            let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            let delivered: @Sendable (WebhookReceiver.Record) -> [String] = { record in
                record.requests(to: "/hooks/s").filter { $0.answeredStatus == 200 }.flatMap { request in
                    (try? JSONParser.parse(request.body).arrayValue)?.compactMap { $0.objectValue?["eventID"]?.stringValue } ?? []
                }
            }
            #expect(await setup.receiver.waitUntil(timeout: .seconds(30)) { delivered($0).count >= events.count })
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
            let requests = setup.receiver.record.requests(to: "/hooks/s")
            // Every event once; a batch's body never changes under its id.
            #expect(delivered(setup.receiver.record).sorted() == events.map(\.eventID).sorted())
            var bodies: [String: [UInt8]] = [:]
            for request in requests {
                let id = try #require(request.webhookID)
                if let first = bodies[id] { #expect(first == request.body, "batch \(id) changed") } else { bodies[id] = request.body }
            }
            // The failed head was retried before anything after it went: one request at a time, head first.
            let firstBatch = try #require(requests.first?.webhookID)
            #expect(requests.prefix(3).allSatisfy { $0.webhookID == firstBatch })
            #expect(requests[2].answeredStatus == 200)
        }
    }

    /// An answer that takes a while to come back must not carry the live cursor past what the API had when it read
    /// the page. With the settle edge off (`lookback: "0s"`) an event the live edge steps over is never read again, so
    /// every event of a steady stream arriving is the check. The API answers 300 ms after reading each page.
    @Test func aSlowAPIAnswerNeverCarriesTheLiveCursorPastWhatTheAPIHadRead() async throws {
        try await Self.withSetup { setup in
            setup.api.update { $0.faults.latency = .milliseconds(300) }
            setup.receiver.script("/hooks/all", [], then: .status(200))
            let config = #"""
                {"stateDirectory": "./state", "metrics": {"listen": "off"}, "shutdownGrace": "2s",
                 "sources": [\#(Self.sourceJSON(setup.api, lookback: "0s"))],
                 "subscriptions": [{"name": "all", "webhook": {"url": "\#(setup.receiver.url("/hooks/all"))", "timeout": "5s"}}]}
                """#
            try config.write(to: setup.configFile, atomically: true, encoding: .utf8)
            setup.api.log.startLiveTraffic(perSecond: 20)
            let relay = try RelayProcess(
                arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            let arrived: @Sendable (WebhookReceiver.Record) -> Set<String> = { record in
                Set(record.requests(to: "/hooks/all").compactMap { try? JSONParser.parse($0.body).objectValue?["eventID"]?.stringValue })
            }
            #expect(await setup.receiver.waitUntil(timeout: .seconds(30)) { arrived($0).count >= 80 })
            setup.api.log.stopLiveTraffic()
            let expected = Set(setup.api.log.allEvents.map(\.eventID))
            #expect(await setup.receiver.waitUntil(timeout: .seconds(15)) { arrived($0).isSuperset(of: expected) })
            let missing = expected.subtracting(arrived(setup.receiver.record))
            #expect(missing.isEmpty, "\(missing.count) of \(expected.count) events never arrived, such as \(missing.sorted().prefix(5))")
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
        }
    }

    @Test func aRefusedWebhookNeverHoldsUpAStopOrAReload() async throws {
        try await Self.withSetup { setup in
            setup.api.log.startLiveTraffic(perSecond: 50)
            let config = #"""
                {"stateDirectory": "./state", "metrics": {"listen": "off"}, "shutdownGrace": "10s",
                 "sources": [\#(Self.sourceJSON(setup.api, lookback: "5s"))],
                 "subscriptions": [
                   {"name": "dead", "webhook": {"url": "http://127.0.0.1:1/hook", "timeout": "5s"}},
                   {"name": "live", "webhook": {"url": "\#(setup.receiver.url("/hooks/live"))", "timeout": "5s"}}]}
                """#
            try config.write(to: setup.configFile, atomically: true, encoding: .utf8)
            let relay = try RelayProcess(
                arguments: ["run", "--config", setup.configFile.path, "--log-level", "debug"], environment: setup.environment,
                directory: setup.directory)
            #expect(await setup.receiver.waitUntil { $0.successesByPath["/hooks/live", default: 0] >= 20 })
            // The dead one's breaker opens after five refusals; its next probe is seconds away.
            #expect(await relay.waitForLog(containing: "circuit open", timeout: .seconds(20)), "\(relay.log)")
            // A reload that changes only the dead one restarts only it: the live one's deliveries go on throughout.
            try config.replacingOccurrences(of: #"1/hook", "timeout": "5s""#, with: #"1/hook", "timeout": "4s""#)
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            let reloadedAt = Int64(Date().timeIntervalSince1970 * 1000)
            relay.signal(SIGHUP)
            #expect(await relay.waitForLog(containing: "reloaded", timeout: .seconds(10)))
            let target = setup.receiver.record.successesByPath["/hooks/live", default: 0] + 100
            #expect(await setup.receiver.waitUntil { $0.successesByPath["/hooks/live", default: 0] >= target })
            let live = setup.receiver.record.requests(to: "/hooks/live").map(\.receivedAt).filter { $0 >= reloadedAt - 1_000 }
            let longestGap = zip(live, live.dropFirst()).map { $1 - $0 }.max() ?? 0
            #expect(longestGap < 600, "the live subscription paused for \(longestGap) ms around the reload")
            #expect(relay.log.contains("restarted=\"subscription dead\""), "\(relay.log)")

            let signalled = ContinuousClock.now
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
            let took = ContinuousClock.now - signalled
            #expect(took < .seconds(1), "SIGTERM took \(took)")
        }
    }

    @Test func aSecondRunOnTheSameStateExits75AndDeliversNothingWhileStatusStillWorks() async throws {
        try await Self.withSetup { setup in
            let expected = try Self.drainAll(setup, count: 2_000, span: 600_000, delay: .milliseconds(2))
            let first = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            #expect(await setup.receiver.waitUntil { $0.countsByPath["/hooks/all", default: 0] >= 100 })

            // The second one exits at once, mid-drain of the first, naming the holder.
            let second = try await RelayBinary.run(["run", "--config", setup.configFile.path], environment: setup.environment, in: setup.directory)
            #expect(second.status == 75, "\(second.standardError)")
            // The directory as the config names it.
            #expect(second.standardError.contains("state directory ./state is in use by pid \(first.process.pid)"))
            let status = try await RelayBinary.run(["status", "--config", setup.configFile.path], environment: [:], in: setup.directory)
            #expect(status.status == 0, "\(status.standardError)")
            #expect(status.standardOutput.contains("source acme: cursor "))

            #expect(await setup.receiver.waitUntil(timeout: .seconds(60)) { expected.isSubset(of: $0.countsByWebhookID.keys) })
            first.signal(SIGTERM)
            #expect(await first.waitForExit(timeout: .seconds(10)) == 0)
            let counts = setup.receiver.record.countsByWebhookID
            #expect(Set(counts.keys) == expected)
            #expect(counts.values.allSatisfy { $0 == 1 }, "repeated: \(counts.filter { $0.value > 1 }.count)")

            // Once the first has exited, the lock is free again.
            let third = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            #expect(await third.waitForLog(containing: "started", timeout: .seconds(10)), "\(third.log)")
            third.signal(SIGTERM)
            #expect(await third.waitForExit(timeout: .seconds(10)) == 0)
        }
    }

    @Test func sighupAddsASubscriptionLiveAndAnInvalidReloadKeepsTheOldConfig() async throws {
        try await Self.withSetup { setup in
            let socket = try NotifyListener(directory: setup.directory)
            defer { socket.close() }
            setup.api.log.startLiveTraffic(perSecond: 50)
            try Self.config(api: setup.api, receiver: setup.receiver, subscriptions: ["first"])
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            var environment = setup.environment
            environment["NOTIFY_SOCKET"] = socket.path
            let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: environment, directory: setup.directory)
            var iterator = socket.messages.makeAsyncIterator()
            // STATUS= lines come every few seconds, in between anything; the order of the rest is what matters.
            func nextNonStatus() async -> String? {
                while let message = await iterator.next() {
                    if !message.hasPrefix("STATUS=") { return message }
                }
                return nil
            }
            let ready = await nextNonStatus()
            #expect(ready?.hasPrefix("READY=1\nSTATUS=1 source, 1 subscription") == true, "\(String(describing: ready))")
            #expect(await setup.receiver.waitUntil { $0.successesByPath["/hooks/first", default: 0] >= 10 })

            // Add a subscription and reload.
            try Self.config(api: setup.api, receiver: setup.receiver, subscriptions: ["first", "second"])
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            relay.signal(SIGHUP)
            let reloading = await nextNonStatus()
            #expect(reloading?.hasPrefix("RELOADING=1\nMONOTONIC_USEC=") == true, "\(String(describing: reloading))")
            var next = await nextNonStatus()
            #expect(next == "READY=1\nSTATUS=1 source, 2 subscriptions")
            #expect(await setup.receiver.waitUntil { $0.successesByPath["/hooks/second", default: 0] >= 10 })

            // An invalid config is logged and ignored: deliveries go on to both.
            try "{ not json".write(to: setup.configFile, atomically: true, encoding: .utf8)
            relay.signal(SIGHUP)
            next = await nextNonStatus()
            #expect(next?.hasPrefix("RELOADING=1") == true)
            next = await nextNonStatus()
            #expect(next == "READY=1\nSTATUS=1 source, 2 subscriptions")
            let before = setup.receiver.record.successesByPath
            #expect(await setup.receiver.waitUntil {
                $0.successesByPath["/hooks/second", default: 0] >= before["/hooks/second", default: 0] + 10
                    && $0.successesByPath["/hooks/first", default: 0] >= before["/hooks/first", default: 0] + 10
            })
            #expect(relay.process.isRunning)
            #expect(relay.log.contains("reload rejected"))
            #expect(relay.log.contains("not valid JSON: line 1, column 3"))

            relay.signal(SIGTERM)
            next = await nextNonStatus()
            // shutdownGrace 2s and the 30s margin: systemd is asked for that long, whatever TimeoutStopSec says.
            #expect(next == "STOPPING=1\nEXTEND_TIMEOUT_USEC=32000000")
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
        }
    }

    /// `intilery-relay reload`, the unit's ExecReload=: it returns only once the daemon has answered, and fails
    /// when the config is rejected or no daemon runs.
    @Test func reloadCommandWaitsForTheDaemonsAnswer() async throws {
        try await Self.withSetup { setup in
            setup.api.log.startLiveTraffic(perSecond: 50)
            try Self.config(api: setup.api, receiver: setup.receiver, subscriptions: ["first"])
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            let reload = ["reload", "--config", setup.configFile.path]

            let early = try await RelayBinary.run(reload, in: setup.directory)
            #expect(early.status == 69, "\(early.standardError)")
            #expect(early.standardError.contains("no relay is running on the state directory ./state"), "\(early.standardError)")

            let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            #expect(await setup.receiver.waitUntil { $0.successesByPath["/hooks/first", default: 0] >= 5 })

            // A valid change: applied by the time the command returns.
            try Self.config(api: setup.api, receiver: setup.receiver, subscriptions: ["first", "second"])
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            let applied = try await RelayBinary.run(reload, in: setup.directory)
            #expect(applied.status == 0, "\(applied.standardError)")
            #expect(applied.standardOutput.contains("Reloaded: the new config is running."))
            #expect(relay.log.contains("reloaded"), "the command returned before the reload: \(relay.log)")
            #expect(await setup.receiver.waitUntil { $0.successesByPath["/hooks/second", default: 0] >= 5 })

            // An invalid change: rejected with its problems, and the daemon runs on with the old config.
            try Self.config(api: setup.api, receiver: setup.receiver, subscriptions: ["first", "second"])
                .replacingOccurrences(of: #""pollInterval": "250ms""#, with: #""pollInterval": "10ms""#)
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            let rejected = try await RelayBinary.run(reload + ["--pid", "\(relay.process.pid)"], in: setup.directory)
            #expect(rejected.status == 78, "\(rejected.standardOutput)")
            #expect(rejected.standardError.contains("\(setup.configFile.path): sources[0].pollInterval: must be at least 100ms"), "\(rejected.standardError)")
            #expect(rejected.standardError.contains("rejected; the running config stays"))
            #expect(relay.process.isRunning)
            let before = setup.receiver.record.successesByPath["/hooks/second", default: 0]
            #expect(await setup.receiver.waitUntil { $0.successesByPath["/hooks/second", default: 0] >= before + 5 })

            // An edit that moves the state: --pid (systemd's $MAINPID) still finds the daemon, through its own
            // open lock, and the answer says what waits for a restart.
            try Self.config(api: setup.api, receiver: setup.receiver, subscriptions: ["first", "second"])
                .replacingOccurrences(of: #""stateDirectory": "./state""#, with: #""stateDirectory": "./elsewhere""#)
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            let moved = try await RelayBinary.run(reload + ["--pid", "\(relay.process.pid)"], in: setup.directory)
            #expect(moved.status == 0, "\(moved.standardError)")
            #expect(moved.standardOutput.contains("stateDirectory changed: it takes effect at the next restart."), "\(moved.standardOutput)")
            let notARelay = try await RelayBinary.run(reload + ["--pid", "\(getpid())"], in: setup.directory)
            #expect(notARelay.status == 69)
            #expect(notARelay.standardError.contains("pid \(getpid()) is not a running relay"), "\(notARelay.standardError)")
            try Self.config(api: setup.api, receiver: setup.receiver, subscriptions: ["first", "second"])
                .write(to: setup.configFile, atomically: true, encoding: .utf8)

            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
            let stopped = try await RelayBinary.run(reload, in: setup.directory)
            #expect(stopped.status == 69, "\(stopped.standardError)")

            // An answer left by the last run is no answer for the next one (after a reboot, its pid may repeat).
            let answerFile = setup.directory.appendingPathComponent("state/\(ReloadAnswer.fileName)").path
            #expect(FileManager.default.fileExists(atPath: answerFile))
            let next = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            #expect(await next.waitForLog(containing: "started", timeout: .seconds(10)), "\(next.log)")
            #expect(!FileManager.default.fileExists(atPath: answerFile))
            next.signal(SIGTERM)
            #expect(await next.waitForExit(timeout: .seconds(10)) == 0)
        }
    }

    @Test func watchdogPingsAtHalfTheRequestedInterval() async throws {
        try await Self.withSetup { setup in
            let socket = try NotifyListener(directory: setup.directory)
            defer { socket.close() }
            try Self.config(api: setup.api, receiver: setup.receiver, subscriptions: ["w"])
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            var environment = setup.environment
            environment["NOTIFY_SOCKET"] = socket.path
            environment["WATCHDOG_USEC"] = "300000"
            let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: environment, directory: setup.directory)
            var pings = 0
            var sawReady = false
            for await message in socket.messages {
                if message.hasPrefix("READY=1") { sawReady = true }
                if message == "WATCHDOG=1" { pings += 1 }
                if pings == 4 { break }
            }
            #expect(sawReady)
            #expect(pings == 4)
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
        }
    }

    /// A catch hook's path is a secret too: given as a secret (env and file forms), it reaches no log, no state
    /// command's output and not the state store, while its requests still go to it.
    @Test func logsCarryNoSecrets() async throws {
        try await Self.withSetup { setup in
            setup.api.log.addBacklog(count: 50, from: 0, to: 1000)
            let urlFile = setup.directory.appendingPathComponent("hook-url")
            try setup.receiver.url("/hooks/catch/FILEPATH").write(to: urlFile, atomically: true, encoding: .utf8)
            let config = #"""
                {"stateDirectory": "./state", "metrics": {"listen": "off"}, "shutdownGrace": "1s",
                 "sources": [{"name": "acme", "baseURL": "\#(setup.api.baseURL)", "clientId": "acme", "accountId": "acme", "brandId": "ACME",
                              "authToken": {"env": "INTILERY_TOKEN"}, "startFrom": "earliest"}],
                 "subscriptions": [{"name": "s", "webhook": {"url": {"env": "HOOK_URL"},
                                    "headers": {"X-Api-Key": "HEADERSECRET-42"}, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}},
                                   {"name": "f", "webhook": {"url": {"file": "\#(urlFile.path)"}}}]}
                """#
            try config.write(to: setup.configFile, atomically: true, encoding: .utf8)
            setup.receiver.script("/hooks/catch/SECRETPATH", [.status(500)], then: .ok)
            setup.receiver.script("/hooks/catch/FILEPATH", [.status(400)], then: .ok)
            var environment = setup.environment
            environment["HOOK_URL"] = setup.receiver.url("/hooks/catch/SECRETPATH")
            let relay = try RelayProcess(
                arguments: ["run", "--config", setup.configFile.path, "--log-level", "trace"], environment: environment,
                directory: setup.directory)
            #expect(await setup.receiver.waitUntil { record in
                record.successesByPath["/hooks/catch/SECRETPATH", default: 0] >= 50 && record.successesByPath["/hooks/catch/FILEPATH", default: 0] >= 49
            })
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
            let log = relay.log
            #expect(!log.isEmpty)
            var outputs = ["the log": log]
            for command in [["status"], ["status", "--json"], ["dead-letters", "list"], ["dead-letters", "show", "1"], ["check-config"]] {
                let outcome = try await RelayBinary.run(command + ["--config", setup.configFile.path], environment: environment, in: setup.directory)
                #expect(outcome.status == 0, "\(command): \(outcome.standardError)")
                outputs[command.joined(separator: " ")] = outcome.standardOutput + outcome.standardError
            }
            #expect(outputs["dead-letters list"]?.contains("f") == true, "the 400 made a dead letter to list")
            for (name, output) in outputs {
                for secret in [setup.api.account.authToken, "HEADERSECRET-42", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "SECRETPATH", "FILEPATH"] {
                    #expect(!output.contains(secret), "\(secret) leaked into \(name)")
                }
            }
            let stateFile = setup.directory.appendingPathComponent("state/relay.sqlite")
            let bytes = try Data(contentsOf: stateFile) + ((try? Data(contentsOf: URL(fileURLWithPath: stateFile.path + "-wal"))) ?? Data())
            for secret in [setup.api.account.authToken, "HEADERSECRET-42", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "SECRETPATH", "FILEPATH"] {
                #expect(bytes.range(of: Data(secret.utf8)) == nil, "\(secret) is in the state store")
            }
        }
    }
}
