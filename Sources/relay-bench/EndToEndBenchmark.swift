import Foundation
import IntilerySimulator
import RelayCore
import RelayJSON
#if canImport(Glibc)
import Glibc
#endif

/// The real daemon as a child process between an in-process simulator and receiver: throughput, CPU, memory,
/// latency, API cost and start-up time.
struct EndToEndBenchmark {
    let relayBinary: String

    struct Drain {
        var events: Int
        var seconds: Double
        var cpuSeconds: Double
        /// This process's CPU over the drain: the simulator and the receiver, which share the machine's cores with
        /// the relay, so that a figure can be read against what the harness itself took.
        var harnessCPUSeconds: Double
        var peakRSSMiB: Double
        var idleRSSMiB: Double
        /// Idle anonymous (private) memory: what the process itself holds, without mapped code and libraries.
        var idlePrivateMiB: Double
        var apiRequests: Int
        /// The state file and its WAL once drained; SQLite never shrinks a file without VACUUM, so this is the
        /// most the drain needed.
        var stateMiB: Double
        /// The share of the machine's CPU time the hypervisor gave to others during the drain (0 on bare metal):
        /// a drain's events/s there is that much short of what the machine's cores would do.
        var stolenShare: Double = 0
        var eventsPerSecond: Double { Double(events) / seconds }
        var cpuPer10k: Double { cpuSeconds / Double(events) * 10_000 }
        var harnessCPUPer10k: Double { harnessCPUSeconds / Double(events) * 10_000 }
        var requestsPer1000: Double { Double(apiRequests) / Double(events) * 1000 }
    }

    /// Drains a backlog to `subscriptions` subscriptions (each takes every event) and measures. `apiLatency`: how
    /// long the API takes to answer each page, as over a network rather than loopback.
    func drain(backlog: Int, batchSize: Int, subscriptions: Int, concurrency: Int, apiLatency: Duration = .zero) async throws -> Drain {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = nil
        settings.faults.latency = apiLatency
        let api = try await FakeEventsAPI.start(settings: settings, threads: 1)
        let receiver = try await WebhookReceiver.start(threads: 1)
        receiver.keep(bodies: false, requests: false)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        api.log.addBacklog(count: backlog, from: now - 3_600_000, to: now - 120_000)
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let names = (0..<subscriptions).map { "s\($0)" }
        try Self.config(api: api, receiver: receiver, names: names, batchSize: batchSize, concurrency: concurrency, lookback: "60s")
            .write(to: directory.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let started = ContinuousClock.now
        let harnessBefore = ProcessCPU.seconds()
        let machineBefore = MachineCPU.now()
        let relay = try ChildProcess(binary: relayBinary, arguments: ["run", "--config", "config.json", "--log-level", "warning"], directory: directory)
        let total = backlog * subscriptions
        let done = await receiver.waitUntil(timeout: .seconds(1800)) { record in
            // Each request carries batchSize events; count successful requests per path times the batch.
            names.allSatisfy { record.successesByPath["/\($0)", default: 0] * batchSize >= backlog - batchSize + 1 }
        }
        let seconds = started.duration(to: .now) / .seconds(1)
        let harness = ProcessCPU.seconds() - harnessBefore
        let stolen = MachineCPU.now().stolenShare(since: machineBefore)
        guard done else { throw BenchmarkError("the drain did not finish") }
        // Counted when the backlog is through: idle polls afterwards re-read the lookback and are not drain cost.
        let requests = api.counts.requests
        let cpu = relay.cpuSeconds
        let peak = relay.peakRSSKiB
        // Idle: caught up, nothing to send; a few polls and one maintenance pass (every 10 s, which gives the drain's
        // freed heap back) go by.
        try await Task.sleep(for: .seconds(11))
        let idle = relay.rssKiB
        let idlePrivate = relay.anonymousKiB
        let state = Self.stateBytes(in: directory.appendingPathComponent("state"))
        relay.terminate()
        try await api.shutdown()
        try await receiver.shutdown()
        return Drain(
            events: total, seconds: seconds, cpuSeconds: cpu, harnessCPUSeconds: harness, peakRSSMiB: Double(peak) / 1024, idleRSSMiB: Double(idle) / 1024,
            idlePrivateMiB: Double(idlePrivate) / 1024, apiRequests: requests, stateMiB: Double(state) / 1_048_576,
            stolenShare: stolen)
    }

    static func describe(_ drain: Drain) -> String {
        String(
            format: "drain: %d deliveries in %.2f s = %.0f events/s, %.3f CPU-s per 10,000, peak RSS %.1f MiB, idle RSS %.1f MiB (private %.1f MiB), state %.1f MiB, %d API requests, harness %.3f CPU-s per 10,000, %.0f%% of the machine's CPU stolen",
            drain.events, drain.seconds, drain.eventsPerSecond, drain.cpuPer10k, drain.peakRSSMiB, drain.idleRSSMiB,
            drain.idlePrivateMiB, drain.stateMiB, drain.apiRequests, drain.harnessCPUPer10k, drain.stolenShare * 100)
    }

    /// Latency from an event becoming visible to its receipt, caught up, with live traffic.
    func latency(perSecond: Double, seconds: Int) async throws -> (p50: Double, p99: Double, samples: Int) {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = nil
        let api = try await FakeEventsAPI.start(settings: settings)
        let receiver = try await WebhookReceiver.start()
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try Self.config(api: api, receiver: receiver, names: ["live"], batchSize: 1, concurrency: 4, lookback: "5s", startFrom: "now")
            .write(to: directory.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let relay = try ChildProcess(binary: relayBinary, arguments: ["run", "--config", "config.json", "--log-level", "warning"], directory: directory)
        try await Task.sleep(for: .seconds(2))
        api.log.startLiveTraffic(perSecond: perSecond)
        try await Task.sleep(for: .seconds(seconds))
        api.log.stopLiveTraffic()
        try await Task.sleep(for: .seconds(3))
        relay.terminate()
        var latencies: [Double] = []
        for request in receiver.record.requests {
            guard let body = try? JSONParser.parse(request.body).objectValue, let text = body["timestamp"]?.stringValue,
                let time = Timestamp(iso8601: text)
            else { continue }
            latencies.append(Double(request.receivedAt - time.millisecondsSinceEpoch))
        }
        try await api.shutdown()
        try await receiver.shutdown()
        latencies.sort()
        guard !latencies.isEmpty else { throw BenchmarkError("no deliveries") }
        func percentile(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
        return (percentile(0.5), percentile(0.99), latencies.count)
    }

    /// Time from exec to READY=1 with a state of `delivered` events already delivered.
    func startup(delivered: Int) async throws -> Double {
        let api = try await FakeEventsAPI.start()
        let receiver = try await WebhookReceiver.start()
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try Self.config(api: api, receiver: receiver, names: ["s0"], batchSize: 1, concurrency: 4, lookback: "60s", startFrom: "now")
            .write(to: directory.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        try await StartupState.fill(directory: directory.appendingPathComponent("state").path, delivered: delivered)
        let listener = try NotifyListener(directory: directory)
        let started = ContinuousClock.now
        let relay = try ChildProcess(
            binary: relayBinary, arguments: ["run", "--config", "config.json", "--log-level", "warning"], directory: directory,
            environment: ["NOTIFY_SOCKET": listener.path])
        for await message in listener.messages where message.hasPrefix("READY=1") { break }
        let seconds = started.duration(to: .now) / .seconds(1)
        relay.terminate()
        listener.close()
        try await api.shutdown()
        try await receiver.shutdown()
        return seconds
    }

    static func temporaryDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("relay-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    /// The state file and its WAL in `stateDirectory`, in bytes.
    static func stateBytes(in stateDirectory: URL) -> Int {
        ["", "-wal"].reduce(0) { total, suffix in
            let path = stateDirectory.appendingPathComponent(StateStore.fileName + suffix).path
            return total + ((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
        }
    }

    static func config(
        api: FakeEventsAPI, receiver: WebhookReceiver, names: [String], batchSize: Int, concurrency: Int, lookback: String,
        startFrom: String = "earliest"
    ) -> String {
        let subscriptions = names.map {
            #"{"name": "\#($0)", "webhook": {"url": "\#(receiver.url("/\($0)"))", "batchSize": \#(batchSize), "concurrency": \#(concurrency)}}"#
        }.joined(separator: ",")
        return #"""
            {"stateDirectory": "./state", "metrics": {"listen": "off"}, "shutdownGrace": "2s",
             "sources": [{"name": "bench", "baseURL": "\#(api.baseURL)", "clientId": "acme", "accountId": "acme", "brandId": "ACME",
                          "authToken": "\#(api.account.authToken)", "startFrom": "\#(startFrom)", "pollInterval": "1s", "lookback": "\#(lookback)",
                          "rateLimit": {"perSecond": 100000, "burst": 100000}}],
             "subscriptions": [\#(subscriptions)]}
            """#
    }
}

/// A child process with its CPU time and memory read from /proc.
final class ChildProcess {
    let process = Process()

    init(binary: String, arguments: [String], directory: URL, environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.environment = environment
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.standardError
        try process.run()
    }

    var peakRSSKiB: Int { ProcessMemory.peakRSSKiB(pid: String(process.processIdentifier)) }
    var rssKiB: Int { ProcessMemory.rssKiB(pid: String(process.processIdentifier)) }
    var anonymousKiB: Int { ProcessMemory.anonymousKiB(pid: String(process.processIdentifier)) }

    /// User plus system CPU seconds so far.
    var cpuSeconds: Double { ProcessCPU.seconds(pid: String(process.processIdentifier)) }

    func terminate() {
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
    }
}

/// A state store as a relay leaves it after delivering many events: stats, and the ids seen in the lookback.
enum StartupState {
    static func fill(directory: String, delivered: Int) async throws {
        let store = try StateStore.open(directory: directory)
        let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
        var next = 0
        while next < delivered {
            let count = min(10_000, delivered - next)
            let events = (next..<next + count).map { n in
                RoutedEvent(
                    event: Event(id: "evt-\(n)", time: now.advanced(by: .milliseconds(Int64(n - delivered))), action: "a",
                                 timeValue: .null, raw: []),
                    subscriptions: [])
            }
            _ = try await store.enqueue(source: "bench", events: events, cursor: now, now: now)
            next += count
        }
    }
}
