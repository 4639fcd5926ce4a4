import Foundation
import IntilerySimulator
import Logging
import PostgresNIO
import RelayCore
import RelayPostgres
#if canImport(Glibc)
import Glibc
#endif

/// Several relay processes on one PostgreSQL schema (docs/several-instances.md): how delivery scales out, what
/// PostgreSQL costs beside SQLite, and failover.
struct PostgresBenchmark {
    let relayBinary: String

    func run() async throws {
        guard let socket = ProcessInfo.processInfo.environment["RELAY_TEST_POSTGRES_SOCKET"] else {
            throw BenchmarkError("no PostgreSQL: run under scripts/with-postgres")
        }
        let socketURL = URL(fileURLWithPath: socket)
        let url = "postgres://relay@/postgres?host=\(socketURL.deletingLastPathComponent().path)&port=\(socketURL.pathExtension)"

        // A slow receiver (100 ms an answer), concurrency 16 in each instance: delivery is bound by places, so three
        // instances should give three times one.
        let one = try await drain(instances: 1, backlog: 2_000, delay: .milliseconds(100), url: url)
        let three = try await drain(instances: 3, backlog: 6_000, delay: .milliseconds(100), url: url)
        print(String(
            format: "postgres scale-out: receiver answering after 100 ms, concurrency 16 each: 1 instance %.0f events/s, 3 instances %.0f events/s = %.2f× (target ≥ 2.7×)",
            one, three, three / one))

        // A fast receiver: one instance on PostgreSQL beside one on SQLite.
        let postgres = try await drain(instances: 1, backlog: 20_000, delay: .zero, url: url)
        let sqlite = try await EndToEndBenchmark(relayBinary: relayBinary).drain(backlog: 20_000, batchSize: 1, subscriptions: 1, concurrency: 16)
        print(String(
            format: "postgres vs sqlite: a fast receiver, concurrency 16, one instance: PostgreSQL %.0f events/s, SQLite %.0f events/s",
            postgres, sqlite.eventsPerSecond))

        let failovers = try await failover(kills: 10, url: url, socket: socket)
        let times = failovers.times.sorted()
        let repeats = failovers.repeatsPerKill.sorted()
        print(String(
            format: "postgres failover: %d kills -9 of the lease holder (poll interval 1 s): to the next poller median %.2f s, worst %.2f s; deliveries repeated per kill median %d, worst %d (%d in all, %d not after a kill)",
            times.count, times[times.count / 2], times.last ?? 0, repeats[repeats.count / 2], repeats.last ?? 0,
            repeats.reduce(0, +) + failovers.unattributed, failovers.unattributed))
    }

    /// Each repeated delivery, counted against the kill that stranded it: the first kill after its first arrival
    /// (sent by an instance then killed before its outcome was stored, it is sent again once its claim times out).
    /// Repeats with no kill after their first arrival are counted apart: no kill explains them.
    static func repeatsPerKill(_ requests: [ReceivedWebhook], kills: [Int64]) -> (perKill: [Int], unattributed: Int) {
        var first: [String: Int64] = [:]
        var count: [String: Int] = [:]
        for request in requests {
            guard let id = request.webhookID else { continue }
            first[id] = min(first[id] ?? request.receivedAt, request.receivedAt)
            count[id, default: 0] += 1
        }
        var perKill = [Int](repeating: 0, count: kills.count)
        var unattributed = 0
        for (id, times) in count where times > 1 {
            if let kill = kills.firstIndex(where: { $0 >= first[id]! }) { perKill[kill] += times - 1 } else { unattributed += times - 1 }
        }
        return (perKill, unattributed)
    }

    static func config(api: FakeEventsAPI, receiver: WebhookReceiver, schema: String) -> String {
        #"""
        {"store": {"postgres": {"url": {"env": "RELAY_POSTGRES_URL"}, "schema": "\#(schema)"}},
         "metrics": {"listen": "off"}, "shutdownGrace": "2s",
         "sources": [{"name": "bench", "baseURL": "\#(api.baseURL)", "clientId": "acme", "accountId": "acme", "brandId": "ACME",
                      "authToken": "\#(api.account.authToken)", "startFrom": "earliest", "pollInterval": "1s", "lookback": "60s",
                      "rateLimit": {"perSecond": 100000, "burst": 100000}}],
         "subscriptions": [{"name": "s0", "webhook": {"url": "\#(receiver.url("/s0"))", "concurrency": 16, "timeout": "5s"}}]}
        """#
    }

    static func schema() -> String { "bench_" + UUID().uuidString.prefix(8).lowercased() }

    /// Events per second from the first instance's start until the receiver has answered every event once.
    private func drain(instances: Int, backlog: Int, delay: Duration, url: String) async throws -> Double {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = nil
        let api = try await FakeEventsAPI.start(settings: settings, threads: 1)
        let receiver = try await WebhookReceiver.start(threads: 1)
        receiver.keep(bodies: false, requests: false)
        if delay > .zero { receiver.script("/s0", [], then: .status(200, after: delay)) }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        api.log.addBacklog(count: backlog, from: now - 3_600_000, to: now - 120_000)
        let directory = try EndToEndBenchmark.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try Self.config(api: api, receiver: receiver, schema: Self.schema())
            .write(to: directory.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let started = ContinuousClock.now
        let relays = try (0..<instances).map { _ in
            try ChildProcess(
                binary: relayBinary, arguments: ["run", "--config", "config.json", "--log-level", "error", "--state-dir", "instance-\(UUID().uuidString.prefix(8))"],
                directory: directory,
                environment: ["RELAY_POSTGRES_URL": url])
        }
        let done = await receiver.waitUntil(timeout: .seconds(600)) { $0.successesByPath["/s0", default: 0] >= backlog }
        let seconds = started.duration(to: .now) / .seconds(1)
        for relay in relays { relay.terminate() }
        try await api.shutdown()
        try await receiver.shutdown()
        guard done else { throw BenchmarkError("the drain on PostgreSQL did not finish") }
        return Double(backlog) / seconds
    }

    /// Three instances under a live stream; the lease holder is killed `kills` times (and replaced), and the time
    /// until another instance holds the lease is measured each time. Then every event must arrive.
    private func failover(
        kills: Int, url: String, socket: String
    ) async throws -> (times: [Double], repeatsPerKill: [Int], unattributed: Int) {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = nil
        let api = try await FakeEventsAPI.start(settings: settings, threads: 1)
        let receiver = try await WebhookReceiver.start(threads: 1)
        receiver.keep(bodies: false, requests: true)
        receiver.script("/s0", [], then: .status(200, after: .milliseconds(5)))
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        api.log.addBacklog(count: 2_000, from: now - 600_000, to: now)
        api.log.startLiveTraffic(perSecond: 100)
        let directory = try EndToEndBenchmark.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let schema = Self.schema()
        try Self.config(api: api, receiver: receiver, schema: schema)
            .write(to: directory.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        func start() throws -> ChildProcess {
            try ChildProcess(
                binary: relayBinary, arguments: ["run", "--config", "config.json", "--log-level", "error", "--state-dir", "instance-\(UUID().uuidString.prefix(8))"],
                directory: directory,
                environment: ["RELAY_POSTGRES_URL": url])
        }
        var relays = try (0..<3).map { _ in try start() }
        let configuration = PostgresClient.Configuration(unixSocketPath: socket, username: "relay", password: nil, database: "postgres")
        let client = PostgresClient(configuration: configuration, backgroundLogger: Logger(label: "bench"))
        let (times, killedAt) = try await withThrowingTaskGroup(of: Void.self) { group -> ([Double], [Int64]) in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            let status = PostgresStatus(RelayDatabase(client: client, schema: schema, logger: Logger(label: "bench")))
            func holder() async throws -> Int32? {
                guard let lease = try await status.holders().first, lease.expiresIn.map({ $0 > .zero }) == true else { return nil }
                return Int32(lease.holder.split(separator: "/").last ?? "")
            }
            var times: [Double] = []
            var killedAt: [Int64] = []
            for _ in 0..<kills {
                // Let the holder poll for a while first.
                try await Task.sleep(for: .seconds(2))
                var current: Int32?
                while current == nil { current = try await holder(); try await Task.sleep(for: .milliseconds(20)) }
                guard let victim = relays.firstIndex(where: { $0.process.processIdentifier == current }) else { throw BenchmarkError("no such holder") }
                kill(current!, SIGKILL)
                let killed = ContinuousClock.now
                // On the receiver's clock, to set against its arrival times.
                killedAt.append(Int64(Date().timeIntervalSince1970 * 1000))
                relays[victim].process.waitUntilExit()
                var next: Int32?
                while next == nil || next == current {
                    next = try await holder()
                    try await Task.sleep(for: .milliseconds(10))
                }
                times.append(killed.duration(to: .now) / .seconds(1))
                relays[victim] = try start()
            }
            return (times, killedAt)
        }
        api.log.stopLiveTraffic()
        let expected = Set(api.log.allEvents.map { "s0:\($0.eventID)" })
        let arrived = await receiver.waitUntil(timeout: .seconds(120)) { expected.isSubset(of: $0.countsByWebhookID.keys) }
        // Claims of killed instances come back after their visibility timeout (2 × 5 s + 10 s).
        try await Task.sleep(for: .seconds(25))
        for relay in relays { relay.terminate() }
        let repeats = Self.repeatsPerKill(receiver.record.requests, kills: killedAt)
        try await api.shutdown()
        try await receiver.shutdown()
        guard arrived else { throw BenchmarkError("events were lost across the failovers") }
        return (times, repeats.perKill, repeats.unattributed)
    }
}
