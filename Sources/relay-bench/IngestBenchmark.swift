import CurlHTTP
import Foundation
import Logging
import RelayCore

/// The ingest half alone: poll a backlog from a simulator in another process into a fresh state store, and report
/// events per second and this process's memory.
struct IngestBenchmark {
    let backlog: Int
    let relayBinary: String

    struct Result {
        var events: Int
        var seconds: Double
        var peakRSSKiB: Int
        var pages: Int
        var eventsPerSecond: Double { Double(events) / seconds }
    }

    func run() async throws -> Result {
        let simulator = try SimulatorProcess.start(binary: relayBinary, backlog: backlog)
        defer { simulator.stop() }
        let directory = try EndToEndBenchmark.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let http = CurlHTTPClient()
        var source = SourceConfig(
            name: "bench", clientId: "acme", accountId: "acme", brandId: "ACME",
            authToken: Secret(simulator.token, origin: .literal))
        source.baseURL = simulator.baseURL
        source.startFrom = .earliest
        source.rateLimit = RateLimit(perSecond: 1_000_000, burst: 1_000_000)
        let subscriptions = [
            SubscriptionConfig(name: "all", source: "bench", webhook: WebhookConfig(url: "http://127.0.0.1:9/all"))
        ]
        let time = RelayTime.system
        let (clock, now) = (time.clock, time.now)
        let client = EventsAPIClient(
            source: source, subscriptions: subscriptions, http: http,
            limiter: RateLimiter(limit: source.rateLimit, clock: clock), now: now)
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let poller = Poller(
            source: source, subscriptions: subscriptions, store: store, client: client, time: time, logger: logger)
        let started = clock.now
        try await poller.pollLive()
        let elapsed = started.duration(to: clock.now)
        await http.shutdown()
        let queued = try await store.status(sources: [], subscriptions: ["all"]).subscriptions[0].pending
        return Result(
            events: queued, seconds: elapsed / .seconds(1), peakRSSKiB: ProcessMemory.peakRSSKiB(),
            pages: poller.health.snapshot.pages)
    }
}

/// `intilery-relay simulate` as a child process, so that its memory is not the relay's.
final class SimulatorProcess {
    let process: Process
    let baseURL: String
    let token: String

    private init(process: Process, baseURL: String, token: String) {
        self.process = process
        self.baseURL = baseURL
        self.token = token
    }

    static func start(binary: String, backlog: Int, extra: [String] = []) throws -> SimulatorProcess {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["simulate", "--api-port", "0", "--sink-port", "0", "--backlog", String(backlog), "--rate", "0", "--rate-limit", "0"] + extra
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        var text = ""
        let handle = output.fileHandleForReading
        while !text.contains("Ctrl-C") {
            let data = handle.availableData
            guard !data.isEmpty else { throw BenchmarkError("the simulator exited: \(text)") }
            text += String(decoding: data, as: UTF8.self)
        }
        // Keep draining its per-second lines so that it never blocks on a full pipe.
        Thread.detachNewThread { while !handle.availableData.isEmpty {} }
        guard let line = text.split(separator: "\n").first(where: { $0.contains("\"baseURL\"") }),
            let base = line.split(separator: "\"").dropFirst(3).first
        else { throw BenchmarkError("cannot read the simulator's banner: \(text)") }
        return SimulatorProcess(process: process, baseURL: String(base), token: "sim-token-1234")
    }

    func stop() {
        process.interrupt()
        process.waitUntilExit()
    }
}

struct BenchmarkError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A process's user plus system CPU seconds so far, all threads, from `/proc/<pid>/stat`: a child's, or this one's.
enum ProcessCPU {
    static func seconds(pid: String = "self") -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// The machine's CPU time from `/proc/stat`: on a virtual machine, the share the hypervisor gave to others ("steal")
/// while a figure was taken says how far wall-clock rates there can be read against a target.
struct MachineCPU {
    var stolen: Double
    var total: Double

    static func now() -> MachineCPU {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") })
        else { return MachineCPU(stolen: 0, total: 0) }
        // user nice system idle iowait irq softirq steal (guest time is counted in user already)
        let ticks = line.split(separator: " ").dropFirst().prefix(8).map { Double($0) ?? 0 }
        return MachineCPU(stolen: ticks.count == 8 ? ticks[7] : 0, total: ticks.reduce(0, +))
    }

    /// The share of all cores' time stolen between `earlier` and this reading, 0 to 1.
    func stolenShare(since earlier: MachineCPU) -> Double {
        let total = self.total - earlier.total
        return total > 0 ? (stolen - earlier.stolen) / total : 0
    }
}

/// Memory figures from `/proc/<pid>/status`, for this process (`self`) or a child.
enum ProcessMemory {
    /// VmHWM: the peak resident set, in KiB.
    static func peakRSSKiB(pid: String = "self") -> Int { field("VmHWM", pid: pid) }
    /// VmRSS: the resident set now, in KiB.
    static func rssKiB(pid: String = "self") -> Int { field("VmRSS", pid: pid) }
    /// RssAnon: the resident anonymous memory (heap, stacks), in KiB.
    static func anonymousKiB(pid: String = "self") -> Int { field("RssAnon", pid: pid) }

    private static func field(_ name: String, pid: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") })
        else { return 0 }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
    }
}
