import Foundation
import IntilerySimulator
import RelayCore
import RelayJSON

/// A subscription far behind (new, with `startFrom` at the start of a large backlog) catching up into a local
/// receiver through the daemon, while another subscription of the same source stays current with live traffic.
struct CatchUpBenchmark {
    let relayBinary: String

    struct Result {
        var events: Int
        var seconds: Double
        var currentP99: Double
        var currentSamples: Int
        var eventsPerSecond: Double { Double(events) / seconds }
    }

    func run(backlog: Int, livePerSecond: Double = 100) async throws -> Result {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = nil
        let api = try await FakeEventsAPI.start(settings: settings, threads: 1)
        // Two receivers: the one behind keeps counts only; the current one keeps bodies, for latency.
        let receiver = try await WebhookReceiver.start(threads: 1)
        receiver.keep(bodies: false, requests: false)
        let currentReceiver = try await WebhookReceiver.start(threads: 1)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let backlogStart = now - 7_200_000
        api.log.addBacklog(count: backlog, from: backlogStart, to: now - 120_000)
        let directory = try EndToEndBenchmark.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let since = Timestamp(millisecondsSinceEpoch: backlogStart - 1_000).iso8601
        try #"""
            {"stateDirectory": "./state", "metrics": {"listen": "off"}, "shutdownGrace": "2s",
             "sources": [{"name": "bench", "baseURL": "\#(api.baseURL)", "clientId": "acme", "accountId": "acme", "brandId": "ACME",
                          "authToken": "\#(api.account.authToken)", "startFrom": "now", "pollInterval": "1s", "lookback": "5s",
                          "rateLimit": {"perSecond": 100000, "burst": 100000}}],
             "subscriptions": [
               {"name": "current", "webhook": {"url": "\#(currentReceiver.url("/current"))"}},
               {"name": "behind", "startFrom": "\#(since)", "webhook": {"url": "\#(receiver.url("/behind"))", "concurrency": 16}}]}
            """#.write(to: directory.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        api.log.startLiveTraffic(perSecond: livePerSecond)
        let started = ContinuousClock.now
        let relay = try ChildProcess(binary: relayBinary, arguments: ["run", "--config", "config.json", "--log-level", "warning"], directory: directory)
        let done = await receiver.waitUntil(timeout: .seconds(1800)) { $0.successesByPath["/behind", default: 0] >= backlog }
        let seconds = started.duration(to: .now) / .seconds(1)
        api.log.stopLiveTraffic()
        relay.terminate()
        try await api.shutdown()
        try await receiver.shutdown()
        let current = currentReceiver.record.requests.map { ($0.receivedAt, $0.body) }
        try await currentReceiver.shutdown()
        guard done else { throw BenchmarkError("the catch-up did not finish") }
        let sorted = current.compactMap { receivedAt, body -> Double? in
            guard let text = (try? JSONParser.parse(body))?.objectValue?["timestamp"]?.stringValue, let time = Timestamp(iso8601: text)
            else { return nil }
            return Double(receivedAt - time.millisecondsSinceEpoch)
        }.sorted()
        guard !sorted.isEmpty else { throw BenchmarkError("the current subscription received nothing") }
        return Result(
            events: backlog, seconds: seconds, currentP99: sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))],
            currentSamples: sorted.count)
    }

    static func describe(_ result: Result) -> String {
        String(
            format: "catch-up: %d events behind caught up at %.0f events/s (target 8000); the current subscription's p99 latency %.0f ms over %d deliveries (target pollInterval + 200 = 1200)",
            result.events, result.eventsPerSecond, result.currentP99, result.currentSamples)
    }
}

