import CurlHTTP
import Foundation
import IntilerySimulator
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `/metrics` of the real daemon, as Prometheus and promtool see it.
@Suite(.serialized, .timeLimit(.minutes(2))) struct MetricsPageTests {
    @Test func thePagePassesPromtoolAndItsGaugesAreReadWhenScraped() async throws {
        try await DaemonTests.withSetup { setup in
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            setup.api.log.addBacklog(count: 30, from: now - 60_000, to: now)
            setup.receiver.script("/hooks/bad", [], then: .status(400))
            // A second source whose token the API refuses: it never polls successfully.
            let source = DaemonTests.sourceJSON(setup.api, lookback: "5s")
            let broken = source.replacingOccurrences(of: #""name": "acme""#, with: #""name": "broken""#)
                .replacingOccurrences(of: #""authToken": {"env": "INTILERY_TOKEN"}"#, with: #""authToken": "wrong-token""#)
            // "refused" sends to a port nothing listens on: requests that end without an HTTP answer.
            let acmeSubscriptions = #"""
                {"name": "bad", "source": "acme", "webhook": {"url": "\#(setup.receiver.url("/hooks/bad"))", "pauseAfter": 0}},
                {"name": "refused", "source": "acme", "webhook": {"url": "http://127.0.0.1:1/hooks/refused"}},
                """#
            func config(withAcme: Bool) -> String {
                #"""
                {"stateDirectory": "./state", "metrics": {"listen": "127.0.0.1:0"}, "shutdownGrace": "2s",
                 "sources": [\#(withAcme ? "\(source), " : "")\#(broken)],
                 "subscriptions": [\#(withAcme ? acmeSubscriptions : "")
                   {"name": "other", "source": "broken", "webhook": {"url": "\#(setup.receiver.url("/hooks/other"))"}}]}
                """#
            }
            try config(withAcme: true).write(to: setup.configFile, atomically: true, encoding: .utf8)
            let relay = try RelayProcess(
                arguments: ["run", "--config", setup.configFile.path, "--log-format", "json", "--log-level", "trace"],
                environment: setup.environment, directory: setup.directory, journal: true)
            defer { relay.signal(SIGKILL) }
            #expect(await relay.waitForLog(containing: "metrics listening", timeout: .seconds(30)))
            let address = try #require(relay.log.firstMatch(of: /metrics listening","address":"127\.0\.0\.1:(\d+)"/)).output.1
            #expect(await setup.receiver.waitUntil { $0.countsByPath["/hooks/bad", default: 0] >= 30 })

            // Gauges read when scraped: within moments of the last dead letter (not the 10 s a periodic refresh
            // took), the stored count equals the counter's. The counter moves at the decision, the store at the
            // commit just after, so a few scrapes may be needed.
            let client = CurlHTTPClient()
            func scrape() async throws -> HTTPResponse {
                try await client.execute(
                    HTTPRequest(method: "GET", url: "http://127.0.0.1:\(address)/metrics", headers: [:], body: [], timeout: .seconds(5)))
            }
            func value(_ prefix: String, in lines: [String]) -> Double? {
                lines.first { $0.hasPrefix(prefix) }.flatMap { Double($0.split(separator: " ").last ?? "") }
            }
            let counter = #"intilery_relay_deliveries_total{subscription="bad",outcome="dead_letter"}"#
            let gauge = #"intilery_relay_dead_letters{subscription="bad"}"#
            var response = try await scrape()
            let deadline = ContinuousClock.now + .seconds(3)
            while ContinuousClock.now < deadline {
                let lines = String(decoding: response.body, as: UTF8.self).split(separator: "\n").map(String.init)
                if value(counter, in: lines) == 30 && value(gauge, in: lines) == 30 { break }
                try await Task.sleep(for: .milliseconds(50))
                response = try await scrape()
            }
            #expect(response.status == 200)
            let page = String(decoding: response.body, as: UTF8.self)
            let lines = page.split(separator: "\n").map(String.init)
            #expect(value(counter, in: lines) == 30)
            #expect(value(gauge, in: lines) == 30, "dead_letters lags deliveries_total: \(page)")

            // promtool: the exposition format and the naming rules (units, _total counters).
            let check = try await Self.promtool(["check", "metrics"], input: response.body)
            #expect(check.status == 0 && check.output.isEmpty, "promtool check metrics:\n\(check.output)\n\(page)")

            // Every metric has HELP and TYPE.
            let typed = Set(lines.filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] })
            let helped = Set(lines.filter { $0.hasPrefix("# HELP ") }.map { $0.split(separator: " ")[2] })
            #expect(typed == helped, "without HELP: \(typed.subtracting(helped).sorted())")
            for name in ["intilery_relay_build_info", "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                         "process_max_fds", "process_start_time_seconds", "intilery_relay_deliveries_total", "intilery_relay_dead_letters"] {
                #expect(typed.contains(Substring(name)), "\(name) missing")
            }
            #expect(lines.contains { $0.hasPrefix(#"intilery_relay_build_info{version="0.1.0",commit=""#) && $0.hasSuffix("} 1") })

            func value(_ prefix: String) -> Double? { value(prefix, in: lines) }
            // A source that never polled successfully has no lag and no cursor, rather than 0 for either.
            #expect(value(#"intilery_relay_cursor_lag_seconds{source="acme"}"#) != nil)
            #expect(!page.contains(#"intilery_relay_cursor_lag_seconds{source="broken"}"#), "\(page)")
            let cursor = try #require(value(#"intilery_relay_cursor_timestamp_seconds{source="acme"}"#), "\(page)")
            #expect(abs(cursor - Date().timeIntervalSince1970) < 60, "the live cursor is near now: \(cursor)")
            #expect(!page.contains(#"intilery_relay_cursor_timestamp_seconds{source="broken"}"#), "\(page)")
            #expect(await relay.waitForLog(containing: #""error":"connection_refused""#, timeout: .seconds(10)), "\(relay.log)")

            // A source removed at a reload takes its cursor gauges with it: frozen, they would feed alerts for ever.
            try config(withAcme: false).write(to: setup.configFile, atomically: true, encoding: .utf8)
            relay.signal(SIGHUP)
            #expect(await relay.waitForLog(containing: #""msg":"reloaded""#, timeout: .seconds(10)), "\(relay.log)")
            let gauges = [#"intilery_relay_cursor_timestamp_seconds{source="acme"}"#, #"intilery_relay_cursor_lag_seconds{source="acme"}"#]
            var afterReload = String(decoding: try await scrape().body, as: UTF8.self)
            let gone = ContinuousClock.now + .seconds(10)
            while gauges.contains(where: afterReload.contains), ContinuousClock.now < gone {
                try await Task.sleep(for: .milliseconds(100))
                afterReload = String(decoding: try await scrape().body, as: UTF8.self)
            }
            await client.shutdown()
            #expect(!gauges.contains(where: afterReload.contains), "\(afterReload)")
            relay.signal(SIGTERM)
            #expect(await relay.waitForExit(timeout: .seconds(10)) == 0)

            // The log, as journald and a JSON log shipper get it.
            let logLines = relay.log.split(separator: "\n").map(String.init)
            #expect(logLines.allSatisfy { $0.firstMatch(of: /^<[2-7]>\{/) != nil }, "every line starts with its priority")
            let records = logLines.compactMap { line -> [String: Any]? in
                guard let brace = line.firstIndex(of: "{") else { return nil }
                return try? JSONSerialization.jsonObject(with: Data(line[brace...].utf8)) as? [String: Any]
            }
            #expect(records.count == logLines.count)
            let started = try #require(records.first { $0["msg"] as? String == "started" })
            #expect(started["sources"] as? Int == 2, "numbers are JSON numbers: \(started)")
            #expect(logLines.contains { $0.hasPrefix("<4>") && $0.contains(#""msg":"dead-lettered""#) })
            // 30 events dead-lettered one by one: ten lines a minute, the rest held back (a slow run may see a
            // second minute begin).
            let deadLettered = records.filter { $0["msg"] as? String == "dead-lettered" }.count
            #expect((10..<30).contains(deadLettered), "\(deadLettered) dead-lettered lines")
            // Those held back are all counted by the stop, in the last minute's window too.
            let heldBack = records.filter { ($0["msg"] as? String)?.wholeMatch(of: /suppressed \d+ lines like: dead-lettered/) != nil }
                .compactMap { $0["suppressed"] as? Int }.reduce(0, +)
            #expect(deadLettered + heldBack == 30, "\(deadLettered) written, \(heldBack) counted as held back")
            // --log-level debug shows each page read, trace each request, with numbers.
            let pageRead = try #require(records.first { $0["msg"] as? String == "page read" })
            #expect(pageRead["events"] is Int && pageRead["took_s"] is NSNumber, "\(pageRead)")
            // status is the HTTP status as a number; a request with no answer has an error instead.
            let request = try #require(records.first { $0["msg"] as? String == "request done" && $0["subscription"] as? String == "bad" })
            #expect(request["status"] as? Int == 400 && request["outcome"] as? String == "dead_letter" && request["attempt"] as? Int == 1, "\(request)")
            #expect(request["error"] == nil, "\(request)")
            let unanswered = try #require(records.first { $0["msg"] as? String == "request done" && $0["subscription"] as? String == "refused" })
            #expect(unanswered["error"] as? String == "connection_refused" && unanswered["status"] == nil, "\(unanswered)")
            // Durations are numbers of seconds, never Swift's "30.0 seconds".
            let unhealthy = try #require(records.first {
                ($0["msg"] as? String)?.hasPrefix("source unhealthy") == true && $0["source"] as? String == "broken"
            })
            #expect((unhealthy["retry_in_s"] as? NSNumber).map { $0.doubleValue > 0 } == true, "\(unhealthy)")
            #expect(!logLines.contains { $0.contains(#"seconds""#) }, "\(relay.log)")
            #expect(logLines.contains { $0.hasPrefix("<7>") && $0.contains(#""msg":"request done""#) })
        }
    }

    /// Runs promtool (Debian's `prometheus` package; `make test` installs it) with `input` on standard input.
    static func promtool(_ arguments: [String], input: [UInt8] = [], in directory: URL? = nil) async throws -> (status: Int32, output: String) {
        guard let path = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            Issue.record("promtool not found: install Debian's prometheus package (make test does)")
            return (-1, "")
        }
        let outcome = try await RelayBinary.run(arguments, environment: nil, in: directory, executable: path, input: input)
        return (outcome.status, outcome.standardOutput + outcome.standardError)
    }
}

/// docs/alerts.yml, the rules an operator loads into Prometheus: valid, and each firing when it should (and only
/// then) on the series in docs/alerts.test.yml.
@Suite struct AlertRulesTests {
    @Test func theShippedAlertRulesPassPromtoolAndTheirUnitTests() async throws {
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs")
        let check = try await MetricsPageTests.promtool(["check", "rules", "alerts.yml"], in: docs)
        #expect(check.status == 0, "\(check.output)")
        #expect(check.output.contains("SUCCESS: 9 rules found"), "\(check.output)")
        let test = try await MetricsPageTests.promtool(["test", "rules", "alerts.test.yml"], in: docs)
        #expect(test.status == 0, "\(test.output)")
        // Every rule is exercised by the unit tests.
        let rules = try String(contentsOf: docs.appendingPathComponent("alerts.yml"), encoding: .utf8)
            .matches(of: /- alert: (\w+)/).map { String($0.output.1) }
        let tests = try String(contentsOf: docs.appendingPathComponent("alerts.test.yml"), encoding: .utf8)
        #expect(rules.count == 9, "\(rules)")
        for rule in rules {
            #expect(tests.contains("alertname: \(rule)"), "\(rule) has no promtool unit test")
        }
    }
}
