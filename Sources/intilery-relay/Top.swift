import ArgumentParser
import CurlHTTP
import Foundation
import RelayCore
import RelayPostgres

/// A live view of a running relay, from its metrics endpoint: what an operator watches during an incident.
struct Top: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Watch a running relay: each source and subscription, refreshed every second.",
        discussion: """
            Reads the daemon's /metrics (metrics.listen in the config, or --metrics). Sources: where the live cursor \
            stands (UTC) and its lag, API requests and 429s per second. Subscriptions: events delivered per second, requests in flight, queued \
            events, the oldest one's age, dead letters, the circuit breaker and whether it is paused. On a terminal \
            it redraws every --interval until Ctrl-C; otherwise (a pipe, a file) it prints one view, measured over \
            one interval, and exits. With a config whose store is PostgreSQL (and no --metrics), it reads the shared \
            database instead, for all instances at once: which instance polls each source, and each subscription's \
            queue, dead letters and requests in flight per instance.
            """
    )

    @Option(name: .long, help: ArgumentHelp("The JSON config file: its metrics.listen says where the daemon answers.", valueName: "file"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("The metrics URL, such as http://127.0.0.1:9464/metrics (instead of --config).", valueName: "url"))
    var metrics: String?

    @Option(name: .long, help: ArgumentHelp("Time between views.", valueName: "duration"))
    var interval: String = "1s"

    @Flag(name: .long, help: "Print one view and exit, even on a terminal.")
    var once = false

    func validate() throws {
        guard config != nil || metrics != nil else { throw ValidationError("Name the daemon: --config FILE or --metrics URL.") }
        guard let every = DurationText.parse(interval), every >= .milliseconds(100) else {
            throw ValidationError("--interval must be a duration of 100ms or more, such as \"1s\".")
        }
    }

    func run() async throws {
        let every = DurationText.parse(interval) ?? .seconds(1)
        let live = !once && isatty(STDOUT_FILENO) == 1
        if metrics == nil, let config {
            let loaded = try loadConfigWithoutSecrets(config)
            if case .postgres(let postgres) = loaded.store {
                try await watchDatabase(postgres, config: loaded, configFile: config, every: every, live: live)
                return
            }
        }
        let url = try metricsURL()
        let client = CurlHTTPClient()
        defer { Task { await client.shutdown() } }
        var previous = try await scrape(url, client: client)
        var previousAt = ContinuousClock.now
        while true {
            try await Task.sleep(for: every)
            let current: MetricsScrape
            do {
                current = try await scrape(url, client: client)
            } catch where live {
                // A daemon restarting: say so and keep watching.
                printLine("\u{1B}[H\u{1B}[2Jintilery-relay top: \(url) does not answer; retrying every \(interval) (Ctrl-C to stop)")
                continue
            }
            let now = ContinuousClock.now
            let seconds = Double((now - previousAt) / .milliseconds(1)) / 1000
            let lines = Self.view(current, previous: previous, seconds: seconds, url: url)
            if live {
                // Home and clear, then the view: redrawn in place, no scrollback flood.
                printLine("\u{1B}[H\u{1B}[2J" + lines.joined(separator: "\n"))
            } else {
                for line in lines { printLine(line) }
                return
            }
            (previous, previousAt) = (current, now)
        }
    }

    /// The view of every instance sharing `postgres`, from the database, every `every` while `live`.
    private func watchDatabase(_ postgres: PostgresStoreConfig, config: RelayConfig, configFile: String, every: Duration, live: Bool) async throws {
        let title = "intilery-relay top: PostgreSQL schema \(postgres.schema), every \(interval)"
        try await withPostgresState(postgres, configFile: configFile) { database in
            while true {
                let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
                let lines: [String]
                do {
                    lines = Self.view(try await PostgresStatusReport.read(database, config: config), now: now, title: title)
                } catch where live {
                    // The database restarting: say so and keep watching.
                    printLine("\u{1B}[H\u{1B}[2J\(title)\nPostgreSQL does not answer (\(String(reflecting: error))); retrying (Ctrl-C to stop)")
                    try await Task.sleep(for: every)
                    continue
                }
                guard live else {
                    for line in lines { printLine(line) }
                    return
                }
                printLine("\u{1B}[H\u{1B}[2J" + lines.joined(separator: "\n"))
                try await Task.sleep(for: every)
            }
        }
    }

    /// The database's view: each source's cursor, lag and the instance polling it; each subscription's queue, dead
    /// letters and requests in flight, in all and per instance.
    static func view(_ report: PostgresStatusReport, now: Timestamp, title: String) -> [String] {
        var lines = [title, ""]
        lines += Table.render(
            header: ["SOURCE", "CURSOR", "LAG", "POLLED BY", "LEASE LEFT"],
            rows: report.sources.map { source in
                let cursor = source.marks.map { Double($0.live.millisecondsSinceEpoch) / 1000 }
                return [
                    source.name, cursor.map { utc($0) } ?? "never polled",
                    cursor.map { duration(max(0, Double(now.millisecondsSinceEpoch) / 1000 - $0)) } ?? "-",
                    source.holder?.holder ?? "nobody", source.holder?.expiresIn.map { duration(Double($0 / .milliseconds(1)) / 1000) } ?? "-",
                ]
            })
        lines.append("")
        lines += Table.render(
            header: ["SUBSCRIPTION", "QUEUED", "IN FLIGHT", "DEAD LETTERS", "PAUSED", "IN FLIGHT BY INSTANCE"],
            rows: report.subscriptions.map { subscription in
                [
                    subscription.name, String(subscription.pending), String(subscription.inFlight.reduce(0) { $0 + $1.requests }),
                    String(subscription.deadLetters), subscription.pause == nil ? "no" : "PAUSED",
                    subscription.inFlight.isEmpty ? "-" : subscription.inFlight.map { "\($0.instance) \($0.requests)" }.joined(separator: ", "),
                ]
            })
        return lines
    }

    private func metricsURL() throws -> String {
        if let metrics { return metrics }
        let loaded = try loadConfigWithoutSecrets(config ?? "")
        guard let listen = loaded.metrics.listen else {
            printToStandardError("intilery-relay top: the config has metrics.listen \"off\"; top reads the metrics endpoint")
            throw ExitCode(64)
        }
        guard listen.port != 0 else {
            printToStandardError(
                "intilery-relay top: metrics.listen has port 0, so the daemon picked one: pass --metrics http://HOST:PORT/metrics (its log line \"metrics listening\" names it)")
            throw ExitCode(64)
        }
        // Every interface: ask on loopback.
        let host = listen.host == ListenAddress.everyInterface || listen.host == "0.0.0.0" ? "127.0.0.1" : listen.host
        return "http://\(ListenAddress(host: host, port: listen.port))/metrics"
    }

    private func scrape(_ url: String, client: CurlHTTPClient) async throws -> MetricsScrape {
        do {
            let response = try await client.execute(HTTPRequest(method: "GET", url: url, headers: [:], body: [], timeout: .seconds(5)))
            guard response.status == 200 else {
                printToStandardError("intilery-relay top: \(url) answered \(response.status)")
                throw ExitCode(69)
            }
            return MetricsScrape(text: String(decoding: response.body, as: UTF8.self))
        } catch let error as CurlHTTPError {
            printToStandardError("intilery-relay top: cannot read \(url): \(error.shortDescription); is the relay running with metrics on?")
            throw ExitCode(69)
        } catch let error as ExitCode {
            throw error
        }
    }

    /// The view: a sources table and a subscriptions table, rates from the two scrapes.
    static func view(_ now: MetricsScrape, previous: MetricsScrape, seconds: Double, url: String) -> [String] {
        /// How much a counter grew between the two scrapes (never negative: a restart resets counters).
        func delta(_ name: String, _ labels: [String: String]) -> Double { max(0, now.sum(name, labels) - previous.sum(name, labels)) }
        func perSecond(_ count: Double) -> String { seconds > 0 ? format(count / seconds) : "-" }
        func rate(_ name: String, _ labels: [String: String]) -> String { perSecond(delta(name, labels)) }
        var lines = ["intilery-relay top: \(url), every \(format(seconds))s", ""]
        let sources = Set(now.labelValues("intilery_relay_api_responses_total", "source") + now.labelValues("intilery_relay_poll_interval_seconds", "source")).sorted()
        lines += Table.render(
            header: ["SOURCE", "CURSOR", "LAG", "API REQ/S", "429/S", "ERRORS/S"],
            rows: sources.map { source in
                let responses = "intilery_relay_api_responses_total"
                let all = delta(responses, ["source": source])
                let ok = delta(responses, ["source": source, "status": "200"])
                let limited = delta(responses, ["source": source, "status": "429"])
                return [
                    source, now.value("intilery_relay_cursor_timestamp_seconds", ["source": source]).map { utc($0) } ?? "never polled",
                    now.value("intilery_relay_cursor_lag_seconds", ["source": source]).map { duration($0) } ?? "-",
                    perSecond(all), perSecond(limited), perSecond(max(0, all - ok - limited)),
                ]
            })
        lines.append("")
        let subscriptions = now.labelValues("intilery_relay_outbox_depth", "subscription")
        lines += Table.render(
            header: ["SUBSCRIPTION", "EVENTS/S", "IN FLIGHT", "QUEUED", "OLDEST", "DEAD LETTERS", "BREAKER", "PAUSED"],
            rows: subscriptions.map { name in
                let labels = ["subscription": name]
                return [
                    name, rate("intilery_relay_deliveries_total", ["subscription": name, "outcome": "delivered"]),
                    now.value("intilery_relay_requests_in_flight", labels).map { String(Int($0)) } ?? "-",
                    now.value("intilery_relay_outbox_depth", labels).map { String(Int($0)) } ?? "-",
                    now.value("intilery_relay_outbox_oldest_age_seconds", labels).map { $0 > 0 ? duration($0) : "-" } ?? "-",
                    now.value("intilery_relay_dead_letters", labels).map { String(Int($0)) } ?? "-",
                    now.value("intilery_relay_circuit_open", labels) == 1 ? "OPEN" : "closed",
                    now.value("intilery_relay_subscription_paused", labels) == 1 ? "PAUSED" : "no",
                ]
            })
        return lines
    }

    static func format(_ value: Double) -> String {
        value >= 100 || value == value.rounded() ? String(Int(value.rounded())) : String(format: "%.1f", value)
    }

    /// 2026-11-29T10:31:02Z: UTC, as the log and the API write times, to the second, as a glance reads them.
    static func utc(_ secondsSinceEpoch: Double) -> String {
        let placeable = Double(Timestamp.placeable.lowerBound / 1000)...Double(Timestamp.placeable.upperBound / 1000)
        guard placeable.contains(secondsSinceEpoch) else { return "-" }
        let iso8601 = Timestamp(millisecondsSinceEpoch: Int64(secondsSinceEpoch.rounded(.down)) * 1000).iso8601
        return iso8601.prefix { $0 != "." } + "Z"
    }

    /// 0.4s, 42s, 7m3s, 2h5m.
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "-" }
        if seconds < 10 { return String(format: "%.1fs", seconds) }
        let whole = Int(seconds)
        if whole < 60 { return "\(whole)s" }
        if whole < 3600 { return "\(whole / 60)m\(whole % 60)s" }
        return "\(whole / 3600)h\((whole % 3600) / 60)m"
    }
}
