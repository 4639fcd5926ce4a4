import Foundation
import IntilerySimulator
import RelayCore
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `intilery-relay top` against a running daemon: as plain text through a pipe, and as a live view in a real
/// terminal (tmux).
@Suite(.serialized, .timeLimit(.minutes(2))) struct TopCommandTests {
    @Test func showsSourcesAndSubscriptionsInAPipeAndInATerminal() async throws {
        try await DaemonTests.withSetup { setup in
            setup.api.log.startLiveTraffic(perSecond: 50)
            setup.receiver.script("/hooks/bad", [], then: .status(400))
            setup.receiver.script("/hooks/down", [], then: .status(503))
            // A second source whose token the API refuses: it never polls successfully.
            let source = DaemonTests.sourceJSON(setup.api, lookback: "5s")
            let broken = source.replacingOccurrences(of: #""name": "acme""#, with: #""name": "broken""#)
                .replacingOccurrences(of: #""authToken": {"env": "INTILERY_TOKEN"}"#, with: #""authToken": "wrong-token""#)
            // "bad" dead-letters every event and pauses after 5; "down" fails until its circuit breaker opens.
            func config(listen: String) -> String {
                #"""
                {"stateDirectory": "./state", "metrics": {"listen": "\#(listen)"}, "shutdownGrace": "2s",
                 "sources": [\#(source), \#(broken)],
                 "subscriptions": [{"name": "all", "source": "acme", "webhook": {"url": "\#(setup.receiver.url("/hooks/all"))"}},
                                   {"name": "bad", "source": "acme", "webhook": {"url": "\#(setup.receiver.url("/hooks/bad"))", "pauseAfter": 5}},
                                   {"name": "down", "source": "acme", "webhook": {"url": "\#(setup.receiver.url("/hooks/down"))"}}]}
                """#
            }
            try config(listen: "127.0.0.1:0").write(to: setup.configFile, atomically: true, encoding: .utf8)
            let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            defer { relay.signal(SIGKILL) }
            #expect(await relay.waitForLog(containing: "metrics listening", timeout: .seconds(30)))
            let port = try #require(relay.log.firstMatch(of: /metrics listening" address=127\.0\.0\.1:(\d+)/)).output.1
            let url = "http://127.0.0.1:\(port)/metrics"
            #expect(await setup.receiver.waitUntil {
                $0.successesByPath["/hooks/all", default: 0] >= 20 && $0.countsByPath["/hooks/bad", default: 0] >= 5
                    && $0.countsByPath["/hooks/down", default: 0] >= 5
            })

            // Through a pipe: one view, plain text, then exit. The gauges follow the receiver by a moment (the
            // pause and the breaker open after the answers), so views are taken until they show it.
            var (piped, rows) = try await Self.pipedView(["top", "--metrics", url, "--interval", "300ms"]) { rows in
                Self.cell(rows, "bad", 7) == "PAUSED" && Self.cell(rows, "down", 6) == "OPEN"
                    && Self.cell(rows, "acme", 1).map { $0 != "never polled" } == true
                    && Self.cell(rows, "all", 1).flatMap(Double.init).map { $0 > 0 } == true
            }
            #expect(piped.status == 0, "\(piped.standardError)")
            #expect(!piped.standardOutput.contains("\u{1B}["), "no escape codes in a pipe")
            #expect(rows["SOURCE"] == ["SOURCE", "CURSOR", "LAG", "API REQ/S", "429/S", "ERRORS/S"], "\(piped.standardOutput)")
            #expect(rows["SUBSCRIPTION"] == ["SUBSCRIPTION", "EVENTS/S", "IN FLIGHT", "QUEUED", "OLDEST", "DEAD LETTERS", "BREAKER", "PAUSED"])
            // acme's cursor is a UTC time to the second, moments behind now; its lag a duration.
            let acme = try #require(rows["acme"], "\(piped.standardOutput)")
            #expect(acme.count == 6, "\(acme)")
            try Self.expectLiveCursor(acme)
            #expect(acme[4] == "0", "no 429s yet: \(acme)")
            #expect(rows["broken"].map { Array($0.prefix(3)) } == ["broken", "never polled", "-"], "\(piped.standardOutput)")
            // 50 events/s of live traffic reach "all"; "bad" has dead letters and is paused; "down"'s breaker is open.
            let all = try #require(rows["all"], "\(piped.standardOutput)")
            #expect(all.count == 8 && all.suffix(2) == ["closed", "no"], "\(all)")
            #expect(Double(all[1]).map { $0 > 0 } == true, "\(all)")
            let bad = try #require(rows["bad"], "\(piped.standardOutput)")
            #expect(Int(bad[5]).map { $0 >= 5 } == true && bad.last == "PAUSED", "\(bad)")
            let down = try #require(rows["down"], "\(piped.standardOutput)")
            #expect(down[6] == "OPEN" && down[7] == "no", "\(down)")

            // With --config: its metrics.listen names the endpoint. The API now allows a request a second, so the
            // poller, asking every 250 ms, meets 429s.
            try config(listen: "127.0.0.1:\(port)").write(to: setup.configFile, atomically: true, encoding: .utf8)
            setup.api.update { $0.rateLimit = (perSecond: 1, burst: 1) }
            (piped, rows) = try await Self.pipedView(["top", "--config", setup.configFile.path, "--interval", "1s"]) { rows in
                Self.cell(rows, "acme", 4).flatMap(Double.init).map { $0 > 0 } == true
            }
            #expect(piped.status == 0, "\(piped.standardError)")
            #expect(piped.standardOutput.hasPrefix("intilery-relay top: \(url), every 1"), "\(piped.standardOutput)")
            let limited = try #require(rows["acme"], "\(piped.standardOutput)")
            #expect(Double(limited[4]).map { $0 > 0 } == true, "429/S: \(limited)")
            try Self.expectLiveCursor(limited)

            // In a terminal: redrawn until Ctrl-C.
            let socket = "relay-top-\(UUID().uuidString.prefix(8))"
            let session = "top"
            func tmux(_ arguments: [String]) async throws -> RelayBinary.Outcome {
                try await RelayBinary.run(["-L", socket] + arguments, executable: "/usr/bin/tmux")
            }
            // Streams on /dev/null, not pipes: the server this tmux forks outlives it and would hold a pipe open.
            #expect(ChildProcess.runQuietly("/usr/bin/tmux", ["-L", socket, "new-session", "-d", "-s", session, "-x", "150", "-y", "30",
                                                       "\(RelayBinary.path) top --metrics \(url) --interval 200ms"]) == 0)
            defer { _ = ChildProcess.runQuietly("/usr/bin/tmux", ["-L", socket, "kill-server"]) }
            var screens: [String] = []
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                let screen = try await tmux(["capture-pane", "-p", "-t", session]).standardOutput
                if screen.contains("SUBSCRIPTION") && screen.contains("bad"), screens.last != screen { screens.append(screen) }
                if screens.count >= 2 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(screens.count >= 2, "the view never redrew: \(screens)")
            let screen = screens.last ?? ""
            #expect(screen.hasPrefix("intilery-relay top: \(url)"), "the view is drawn from the top of a cleared screen:\n\(screen)")
            #expect(screen.components(separatedBy: "SUBSCRIPTION").count == 2, "one view on the screen, not a scroll of them:\n\(screen)")
            _ = try await tmux(["send-keys", "-t", session, "C-c"])
            let noSession = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < noSession, try await tmux(["has-session", "-t", session]).status == 0 {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(try await tmux(["has-session", "-t", session]).status != 0, "Ctrl-C ends it")

            let none = try await RelayBinary.run(["top", "--metrics", "http://127.0.0.1:1/metrics", "--once"])
            #expect(none.status == 69)
            #expect(none.standardError.contains("is the relay running with metrics on?"), "\(none.standardError)")
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)
        }
    }

    /// Runs `top` through a pipe, again until `done` holds for its rows or 20 s have passed; the last output and
    /// its rows, each by its first cell, split at runs of two or more spaces (a cell such as "never polled" has one).
    static func pipedView(
        _ arguments: [String], until done: ([String: [String]]) -> Bool
    ) async throws -> (RelayBinary.Outcome, [String: [String]]) {
        let deadline = ContinuousClock.now + .seconds(20)
        while true {
            let outcome = try await RelayBinary.run(arguments)
            let rows = Dictionary(
                outcome.standardOutput.split(separator: "\n").map { $0.split(separator: #/ {2,}/#).map(String.init) }.filter { !$0.isEmpty }
                    .map { ($0[0], $0) },
                uniquingKeysWith: { first, _ in first })
            if outcome.status != 0 || done(rows) || ContinuousClock.now > deadline { return (outcome, rows) }
        }
    }

    /// The `column`th cell of the row named `name`, if there is one.
    static func cell(_ rows: [String: [String]], _ name: String, _ column: Int) -> String? {
        rows[name].flatMap { column < $0.count ? $0[column] : nil }
    }

    /// A source row's CURSOR is a UTC time to the second within a minute of now, and its LAG a duration.
    static func expectLiveCursor(_ row: [String]) throws {
        #expect(row[1].wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/) != nil, "CURSOR: \(row)")
        let cursor = try #require(Timestamp(iso8601: row[1]), "CURSOR: \(row)")
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        #expect(abs(now - cursor.millisecondsSinceEpoch) < 60_000, "CURSOR: \(row) at \(now)")
        #expect(row[2].wholeMatch(of: /\d+\.\ds|\d+s|\d+m\d+s|\d+h\d+m/) != nil, "LAG: \(row)")
    }
}
