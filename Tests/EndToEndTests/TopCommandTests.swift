import Foundation
import IntilerySimulator
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
            try #"""
                {"stateDirectory": "./state", "metrics": {"listen": "127.0.0.1:0"}, "shutdownGrace": "2s",
                 "sources": [\#(DaemonTests.sourceJSON(setup.api, lookback: "5s"))],
                 "subscriptions": [{"name": "all", "webhook": {"url": "\#(setup.receiver.url("/hooks/all"))"}},
                                   {"name": "bad", "webhook": {"url": "\#(setup.receiver.url("/hooks/bad"))", "pauseAfter": 0}}]}
                """#.write(to: setup.configFile, atomically: true, encoding: .utf8)
            let relay = try RelayProcess(arguments: ["run", "--config", setup.configFile.path], environment: setup.environment, directory: setup.directory)
            defer { relay.signal(SIGKILL) }
            #expect(await relay.waitForLog(containing: "metrics listening", timeout: .seconds(10)))
            let port = try #require(relay.log.firstMatch(of: /metrics listening" address=127\.0\.0\.1:(\d+)/)).output.1
            let url = "http://127.0.0.1:\(port)/metrics"
            #expect(await setup.receiver.waitUntil { $0.successesByPath["/hooks/all", default: 0] >= 20 && $0.countsByPath["/hooks/bad", default: 0] >= 5 })

            // Through a pipe: one view, plain text, then exit.
            let piped = try await RelayBinary.run(["top", "--metrics", url, "--interval", "300ms"])
            #expect(piped.status == 0, "\(piped.standardError)")
            let lines = piped.standardOutput.split(separator: "\n").map(String.init)
            #expect(!piped.standardOutput.contains("\u{1B}["), "no escape codes in a pipe")
            #expect(lines.contains { $0.hasPrefix("SOURCE") && $0.contains("API REQ/S") })
            #expect(lines.contains { $0.hasPrefix("acme") }, "\(piped.standardOutput)")
            #expect(lines.contains { $0.hasPrefix("SUBSCRIPTION") && $0.contains("IN FLIGHT") && $0.contains("DEAD LETTERS") })
            let all = try #require(lines.first { $0.hasPrefix("all ") }, "\(piped.standardOutput)")
            let bad = try #require(lines.first { $0.hasPrefix("bad ") }, "\(piped.standardOutput)")
            #expect(all.split(separator: " ", omittingEmptySubsequences: true).count == 8, "\(all)")
            // 50 events/s of live traffic reach "all"; "bad" has dead letters.
            #expect(Double(all.split(separator: " ", omittingEmptySubsequences: true)[1]).map { $0 > 0 } == true, "\(all)")
            #expect(Int(bad.split(separator: " ", omittingEmptySubsequences: true)[5]).map { $0 >= 5 } == true, "\(bad)")

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
}
