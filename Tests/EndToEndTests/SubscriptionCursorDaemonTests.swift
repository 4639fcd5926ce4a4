import CurlHTTP
import Foundation
import IntilerySimulator
import RelayCore
import RelayJSON
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Subscription cursors with the real daemon: a subscription renamed, removed and added back across reloads (its
/// queued events and dead letters are reported, kept, never sent or replayed under a name nothing sends, and go out
/// again when the name comes back; its gauges leave `/metrics`), and `replay` of a range mid-run.
@Suite(.serialized, .timeLimit(.minutes(3))) struct SubscriptionCursorDaemonTests {
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
            let status = try await RelayBinary.run(["status", "--json"] + base, environment: setup.environment, in: setup.directory)
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
            let list = try await RelayBinary.run(["dead-letters", "list", "--subscription", "all", "--json"] + base, environment: setup.environment, in: setup.directory)
            #expect(list.status == 0, "\(list.standardError)")
            #expect(try JSONParser.parse(list.standardOutput).arrayValue?.count == 5)
            let refused = try await RelayBinary.run(["dead-letters", "replay", "--subscription", "all"] + base, environment: setup.environment, in: setup.directory)
            #expect(refused.status == 64)
            #expect(refused.standardError.contains("all is no longer in the config"))
            let replayAll = try await RelayBinary.run(["dead-letters", "replay", "--json"] + base, environment: setup.environment, in: setup.directory)
            #expect(replayAll.standardOutput.contains(#"{"replayed":0,"#), "\(replayAll.standardOutput)")
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
            let after = try await RelayBinary.run(["status", "--json"] + base, environment: setup.environment, in: setup.directory)
            #expect(try JSONParser.parse(after.standardOutput).objectValue?["orphans"]?.arrayValue?.isEmpty == true, "\(after.standardOutput)")

            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
        }
    }

    @Test func replaySinceMidRunDeliversExactlyTheRangeAgainUnderTheOriginalIDs() async throws {
        try await DaemonTests.withSetup { setup in
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.log.addBacklog(count: 300, from: now - 600_000, to: now - 1_000)
            setup.receiver.script("/hooks/all", [], then: .ok)
            try DaemonTests.config(api: setup.api, receiver: setup.receiver, subscriptions: ["all"])
                .write(to: setup.configFile, atomically: true, encoding: .utf8)
            let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            defer { relay.signal(SIGKILL) }
            #expect(await setup.receiver.waitUntil { $0.successesByPath["/hooks/all", default: 0] >= 300 })
            let first = Dictionary(
                setup.receiver.record.requests(to: "/hooks/all").compactMap { request in
                    request.webhookID.flatMap { id in Self.eventID(request).map { ($0, id) } }
                }, uniquingKeysWith: { first, _ in first })
            #expect(first.count == 300)

            let since = Timestamp(millisecondsSinceEpoch: now - 400_000)
            let until = Timestamp(millisecondsSinceEpoch: now - 200_000)
            let range = setup.api.log.allEvents.filter { $0.timestamp >= since.millisecondsSinceEpoch && $0.timestamp < until.millisecondsSinceEpoch }
            #expect(range.count > 50)
            let replay = try await RelayBinary.run(
                ["replay", "--config", setup.configFile.path, "--subscription", "all", "--since", since.iso8601, "--until", until.iso8601, "--wait"],
                environment: setup.environment, in: setup.directory)
            #expect(replay.status == 0, "\(replay.standardError)")
            #expect(replay.standardOutput.contains("\(range.count) events queued"), "\(replay.standardOutput)")
            #expect(await setup.receiver.waitUntil { $0.successesByPath["/hooks/all", default: 0] >= 300 + range.count })
            let again = setup.receiver.record.requests(to: "/hooks/all").dropFirst(300)
            #expect(again.count == range.count)
            #expect(Set(again.compactMap(Self.eventID)) == Set(range.map(\.eventID)))
            // Each under the webhook-id of its first delivery.
            #expect(again.allSatisfy { request in Self.eventID(request).flatMap { first[$0] } == request.webhookID })

            // On a terminal (script(1) gives it one), --wait shows how far the range has been read while it waits.
            setup.api.update { $0.faults.latency = .milliseconds(1_200) }
            let command = [RelayBinary.path, "replay", "--config", setup.configFile.path, "--subscription", "all", "--since", since.iso8601,
                           "--until", until.iso8601, "--wait"].joined(separator: " ")
            let watched = try await RelayBinary.run(["-qec", command, "/dev/null"], environment: setup.environment, in: setup.directory, executable: "/usr/bin/script")
            setup.api.update { $0.faults.latency = .zero }
            #expect(watched.status == 0, "\(watched.standardOutput)")
            #expect(watched.standardOutput.contains("read to "), "\(watched.standardOutput)")
            #expect(watched.standardOutput.contains("events queued"))

            // A name the config does not have, and a range that ends before it starts, are refused.
            let unknown = try await RelayBinary.run(
                ["replay", "--config", setup.configFile.path, "--subscription", "nope", "--since", since.iso8601],
                environment: setup.environment, in: setup.directory)
            #expect(unknown.status == 64)
            let backwards = try await RelayBinary.run(
                ["replay", "--config", setup.configFile.path, "--subscription", "all", "--since", until.iso8601, "--until", since.iso8601],
                environment: setup.environment, in: setup.directory)
            #expect(backwards.status == 64)
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
        }
    }

    @Test func aSubscriptionAddedWithStartFromAnHourBackGetsThatHourThenLiveEventsEachOnce() async throws {
        try await DaemonTests.withSetup { setup in
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.log.addBacklog(count: 2_000, from: now - 7_200_000, to: now - 1_000)
            setup.api.log.startLiveTraffic(perSecond: 20)
            let write = { (subscriptions: String) in
                try #"""
                    {"stateDirectory": "./state", "metrics": {"listen": "off"}, "shutdownGrace": "1s",
                     "sources": [{"name": "acme", "baseURL": "\#(setup.api.baseURL)", "clientId": "acme", "accountId": "acme", "brandId": "ACME", "authToken": {"env": "INTILERY_TOKEN"}, "startFrom": "now", "pollInterval": "250ms", "lookback": "2s"}],
                     "subscriptions": [\#(subscriptions)]}
                    """#.write(to: setup.configFile, atomically: true, encoding: .utf8)
            }
            let existing = #"{"name": "existing", "webhook": {"url": "\#(setup.receiver.url("/hooks/existing"))"}}"#
            try write(existing)
            let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            defer { relay.signal(SIGKILL) }
            #expect(await setup.receiver.waitUntil { $0.successesByPath["/hooks/existing", default: 0] >= 40 })
            let rate = { () async -> Int in
                let before = setup.api.counts.requests
                try? await Task.sleep(for: .seconds(3))
                return setup.api.counts.requests - before
            }
            let sharedPollBefore = await rate()

            let since = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000) - 3_600_000)
            try write(existing + #", {"name": "added", "startFrom": "\#(since.iso8601)", "webhook": {"url": "\#(setup.receiver.url("/hooks/added"))"}}"#)
            relay.signal(SIGHUP)
            #expect(await relay.waitForLog(containing: "caught up: joined the shared poll", timeout: .seconds(60)), "\(relay.log)")
            let sharedPollAfter = await rate()
            setup.api.log.stopLiveTraffic()
            // The last live events reach both, then nothing more comes.
            let events = setup.api.log.allEvents
            let forAdded = Set(events.filter { $0.timestamp >= since.millisecondsSinceEpoch }.map(\.eventID))
            #expect(await setup.receiver.waitUntil(timeout: .seconds(30)) { record in
                record.successesByPath["/hooks/added", default: 0] >= forAdded.count
            })
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)

            let added = setup.receiver.record.requests(to: "/hooks/added").compactMap(Self.eventID)
            #expect(added.count == forAdded.count, "\(added.count) deliveries for \(forAdded.count) events")
            #expect(Set(added) == forAdded)
            // The existing one is unaffected: every live event once, none of the backfill.
            let existingIDs = setup.receiver.record.requests(to: "/hooks/existing").compactMap(Self.eventID)
            #expect(existingIDs.count == Set(existingIDs).count)
            #expect(Set(existingIDs).isSubset(of: Set(events.filter { $0.timestamp >= now }.map(\.eventID))))
            // Once joined, one shared poll serves both: requests do not grow with the subscription.
            #expect(sharedPollAfter <= sharedPollBefore + 3, "\(sharedPollBefore) requests in 3 s before, \(sharedPollAfter) after")
        }
    }

    @Test func aDeadWebhookFillsNoDiskStopsNothingAndLosesNothingOnceItReturns() async throws {
        try await DaemonTests.withSetup { setup in
            // Down until the healthy one has every event, however long the machine takes to get there.
            setup.receiver.outage("/hooks/down", until: .max, reply: .status(503))
            setup.receiver.keep(bodies: true)
            try #"""
                {"stateDirectory": "./state", "metrics": {"listen": "off"}, "shutdownGrace": "1s",
                 "sources": [{"name": "acme", "baseURL": "\#(setup.api.baseURL)", "clientId": "acme", "accountId": "acme", "brandId": "ACME", "authToken": {"env": "INTILERY_TOKEN"}, "startFrom": "now", "pollInterval": "250ms", "lookback": "2s"}],
                 "subscriptions": [
                   {"name": "healthy", "webhook": {"url": "\#(setup.receiver.url("/hooks/healthy"))"}},
                   {"name": "down", "webhook": {"url": "\#(setup.receiver.url("/hooks/down"))", "maxQueued": 1000, "concurrency": 16}}]}
                """#.write(to: setup.configFile, atomically: true, encoding: .utf8)
            let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            defer { relay.signal(SIGKILL) }
            #expect(await relay.waitForLog(containing: "started", timeout: .seconds(10)))
            // 10,000 events while the webhook is down: ten times its maxQueued.
            setup.api.log.startLiveTraffic(perSecond: 500)
            let state = setup.directory.appendingPathComponent("state")
            let store = try #require(try StateStore.openExisting(directory: state.path))
            var deepest = 0
            var largestFile = 0
            var largestDatabase = 0
            var deepestHealthy = 0
            let giveUp = ContinuousClock.now.advanced(by: .seconds(120))
            while ContinuousClock.now < giveUp {
                let sent = setup.api.log.count
                if sent >= 10_000 { setup.api.log.stopLiveTraffic() }
                deepest = max(deepest, try await store.queueDepth("down"))
                deepestHealthy = max(deepestHealthy, try await store.queueDepth("healthy"))
                largestFile = max(largestFile, Self.bytes(in: state))
                largestDatabase = max(largestDatabase, Self.bytes(in: state, named: StateStore.fileName))
                if sent >= 10_000, setup.receiver.record.successesByPath["/hooks/healthy", default: 0] >= sent { break }
                try await Task.sleep(for: .milliseconds(250))
            }
            setup.api.log.stopLiveTraffic()
            let events = Set(setup.api.log.allEvents.map(\.eventID))
            #expect(events.count >= 10_000)
            // The healthy one and polling never stopped: every event reached it while the other was down.
            #expect(setup.receiver.record.successesByPath["/hooks/healthy", default: 0] >= events.count)
            // The queue stayed at its bound, and with it the disk. The database holds what is queued, about 0.6 KB
            // an event with its indexes, and the seen ids of the last minute or so, about 60 bytes an event: the
            // bound is 1 MB plus 1 KB per event queued at most (maxQueued, plus the healthy subscription's own
            // backlog when the machine is busy). Without maxQueued, 10,000 events would be queued for "down".
            // Beside the database, SQLite's write-ahead log checkpoints at about 4 MB.
            print("dead webhook: \(events.count) events, deepest queue \(deepest) (healthy \(deepestHealthy)), database \(largestDatabase) bytes, with log \(largestFile)")
            // maxQueued, plus the events of the millisecond that filled it (queued rather than read twice) and a
            // join's tail: a handful.
            #expect(deepest <= 1_000 + 10, "\(deepest) queued")
            let bound = (1 << 20) + 1_024 * (1_000 + deepestHealthy)
            #expect(largestDatabase < bound, "database \(largestDatabase) bytes, bound \(bound)")
            #expect(largestFile < bound + (6 << 20), "database, log and index \(largestFile) bytes")
            let cursor = try await store.subscriptionCursor("down")
            #expect(cursor?.state == .behind && cursor?.reason == .queueFull)
            let status = try await RelayBinary.run(["status", "--config", setup.configFile.path], environment: setup.environment, in: setup.directory)
            #expect(status.standardOutput.contains("subscription down: ") && status.standardOutput.contains("(queue full), reading on from"),
                    "\(status.standardOutput)")

            // Back: it drains, catches up from the API and gets every event exactly once.
            setup.receiver.outage("/hooks/down", until: 0)
            #expect(await setup.receiver.waitUntil(timeout: .seconds(120)) { $0.successesByPath["/hooks/down", default: 0] >= events.count },
                    "\(setup.receiver.record.successesByPath)")
            let delivered = setup.receiver.record.requests(to: "/hooks/down").filter { $0.answeredStatus == 200 }.compactMap(Self.eventID)
            #expect(delivered.count == events.count && Set(delivered) == events)
            let healthy = setup.receiver.record.requests(to: "/hooks/healthy").compactMap(Self.eventID)
            #expect(healthy.count == events.count && Set(healthy) == events)
            #expect(try await store.deadLetters().isEmpty)
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
        }
    }

    /// Bytes in a directory's files: the store, its write-ahead log and its shared memory.
    static func bytes(in directory: URL, named name: String? = nil) -> Int {
        let files = ((try? FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: [.fileSizeKey])) ?? [])
            .filter { name == nil || $0.lastPathComponent == name }
        return files.reduce(0) { $0 + ((try? $1.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0) }
    }

    /// The event a one-event request carried.
    static func eventID(_ request: ReceivedWebhook) -> String? {
        (try? JSONParser.parse(request.body))?.objectValue?["eventID"]?.stringValue
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
