import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The `/metrics` page as Prometheus users expect it: the registry's metrics with a `# HELP` line each, the
/// relay's build, and the standard `process_*` metrics read from `/proc` when scraped.
public enum MetricsPage {
    /// What each of the relay's metrics means. A metric without an entry would get no HELP line: MetricsHelpTests
    /// fails for any `"intilery_relay_…"` name in Sources/ that has none.
    static let help: [String: String] = [
        "intilery_relay_events_received_total": "Events read from the Events API, duplicates included.",
        "intilery_relay_events_queued_total": "Events queued for at least one subscription.",
        "intilery_relay_events_duplicate_total": "Events read again and dropped by their eventID.",
        "intilery_relay_events_skipped_total": "Events skipped because their id or time could not be read or placed, by reason.",
        "intilery_relay_api_responses_total": "Events API responses by HTTP status; transport when there was none, malformed for a body that could not be read.",
        "intilery_relay_poll_interval_seconds": "The source's configured pollInterval.",
        "intilery_relay_last_successful_poll_timestamp_seconds": "When the Events API last answered the source with a page that could be read (unix seconds).",
        "intilery_relay_scrape_store_read_failures_total": "Scrapes whose read of the queue gauges from the state store failed or took over 2 s; the gauges then keep their last values.",
        "intilery_relay_cursor_lag_seconds": "How far the source's cursor is behind now, after its last successful live poll; absent until the first.",
        "intilery_relay_cursor_timestamp_seconds": "Where the source's live cursor stands (unix seconds), after its last successful live poll; absent until the first.",
        "intilery_relay_deliveries_total": "Events handed to a webhook, by outcome: delivered, retry or dead_letter.",
        "intilery_relay_delivery_seconds": "Webhook request durations.",
        "intilery_relay_circuit_open": "1 while the subscription's webhook circuit breaker is open.",
        "intilery_relay_subscription_paused": "1 while the subscription is paused after repeated dead letters.",
        "intilery_relay_outbox_depth": "Events queued for the subscription, read from the state store when scraped.",
        "intilery_relay_outbox_oldest_age_seconds": "Age of the subscription's oldest queued event (by its time), when scraped; 0 when none is queued.",
        "intilery_relay_dead_letters": "Dead letters kept for the subscription, when scraped.",
        "intilery_relay_requests_in_flight": "Webhook requests of the subscription being sent, when scraped.",
        "intilery_relay_source_lease_held": "1 while this instance holds the source's lease and polls it (several instances on PostgreSQL).",
    ]

    /// The page: `registry` (the Prometheus registry's own text) with HELP lines, then build and process metrics.
    public static func render(registry: [UInt8]) -> [UInt8] {
        var page = withHelp(registry)
        page += Array(buildInfo().utf8)
        page += Array(processMetrics().utf8)
        return page
    }

    /// Puts `# HELP NAME TEXT` before each `# TYPE NAME ...` line that has none.
    static func withHelp(_ exposition: [UInt8]) -> [UInt8] {
        var out = ""
        for line in String(decoding: exposition, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE ") {
                let name = line.dropFirst(7).prefix { $0 != " " }
                if let text = help[String(name)] { out += "# HELP \(name) \(text)\n" }
            }
            if !line.isEmpty { out += line + "\n" }
        }
        return Array(out.utf8)
    }

    static func buildInfo() -> String {
        """
        # HELP intilery_relay_build_info The running build: its version and the git commit it was built from; always 1.
        # TYPE intilery_relay_build_info gauge
        intilery_relay_build_info{version="\(escaped(RelayVersion.current))",commit="\(escaped(RelayVersion.commit))"} 1

        """
    }

    /// The process metrics every Prometheus client library exports, read from `/proc/self`; a value that cannot be
    /// read is left out rather than reported as 0.
    static func processMetrics() -> String {
        var text = ""
        func add(_ name: String, _ type: String, _ help: String, _ value: Double?) {
            guard let value, value.isFinite else { return }
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(format(value))\n"
        }
        let stat = ProcessStat.read()
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        add("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
            stat.map { Double($0.userTicks + $0.systemTicks) / ticks })
        add("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", stat.map { Double($0.residentPages) * pageSize })
        add("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", stat.map { Double($0.virtualBytes) })
        add("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
            stat.flatMap { stat in bootTime().map { $0 + Double(stat.startTicks) / ticks } })
        add("process_open_fds", "gauge", "Number of open file descriptors.",
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")).map { Double($0.count) })
        var limit = rlimit()
        add("process_max_fds", "gauge", "Maximum number of open file descriptors.",
            getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 && limit.rlim_cur != rlim_t.max ? Double(limit.rlim_cur) : nil)
        return text
    }

    /// A label value as the exposition format writes it.
    private static func escaped(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }

    /// `btime` from /proc/stat: boot, in seconds since the epoch.
    private static func bootTime() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}

/// The fields of `/proc/self/stat` the process metrics need (proc(5)).
struct ProcessStat {
    var userTicks: UInt64
    var systemTicks: UInt64
    var startTicks: UInt64
    var virtualBytes: UInt64
    var residentPages: UInt64

    static func read() -> ProcessStat? {
        guard let text = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        // After "pid (comm)" come the fields from 3 (state) on; comm may hold spaces and parentheses.
        let fields = text[text.index(after: close)...].split(separator: " ")
        func field(_ number: Int) -> UInt64? {
            let index = number - 3
            return index < fields.count ? UInt64(fields[index].trimmingCharacters(in: .whitespacesAndNewlines)) : nil
        }
        guard let user = field(14), let system = field(15), let start = field(22), let virtual = field(23), let resident = field(24)
        else { return nil }
        return ProcessStat(userTicks: user, systemTicks: system, startTicks: start, virtualBytes: virtual, residentPages: resident)
    }
}
