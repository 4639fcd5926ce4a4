import Foundation
import IntilerySimulator
import RelayCore
import RelayJSON

/// What a steady live stream costs in API requests, and whether the relay keeps up with it: the real daemon with
/// `pollInterval` 1s and `lookback` 60s against live traffic, measured once both edges are at work.
struct LiveBenchmark {
    let relayBinary: String
    /// Seconds before measuring: the lookback plus a settle step, so that the settle edge is reading.
    var warmUp: Int = 95
    /// Seconds measured.
    var measured: Int = 90

    struct Result {
        var perSecond: Double
        var requests: Int
        var events: Int
        var seconds: Double
        var eventsServed: Int
        /// Events stamped before the end less a few seconds that never reached the receiver.
        var missing: Int
        var status429: Int
        /// Visible-to-received latency of the measured events, ms (events visible on time).
        var p50: Double?
        var p99: Double?
        var latencySamples: Int

        var requestsPer1000: Double { Double(requests) / Double(events) * 1000 }
        var requestsPerSecond: Double { Double(requests) / seconds }
        var readsPerEvent: Double { Double(eventsServed) / Double(events) }
    }

    /// Live traffic at `perSecond`. `apiLimited`: the simulator enforces the real API's 100 requests/s (burst 500)
    /// and the relay its default limit, as against the real API; otherwise neither limits. With `latency`, every
    /// delivery's body is kept to measure visible-to-received time.
    func run(perSecond: Double, apiLimited: Bool, latency: Bool) async throws -> Result {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = apiLimited ? (100, 500) : nil
        let api = try await FakeEventsAPI.start(settings: settings, threads: 1)
        let receiver = try await WebhookReceiver.start(threads: 1)
        receiver.keep(bodies: latency, requests: latency)
        let directory = try EndToEndBenchmark.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let rateLimit = apiLimited ? "" : #", "rateLimit": {"perSecond": 100000, "burst": 100000}"#
        let config = #"""
            {"stateDirectory": "./state", "metrics": {"listen": "off"}, "shutdownGrace": "2s",
             "sources": [{"name": "bench", "baseURL": "\#(api.baseURL)", "clientId": "acme", "accountId": "acme", "brandId": "ACME",
                          "authToken": "\#(api.account.authToken)", "startFrom": "now", "pollInterval": "1s", "lookback": "60s"\#(rateLimit)}],
             "subscriptions": [{"name": "live", "webhook": {"url": "\#(receiver.url("/live"))", "concurrency": 16}}]}
            """#
        try config.write(to: directory.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let relay = try ChildProcess(binary: relayBinary, arguments: ["run", "--config", "config.json", "--log-level", "warning"], directory: directory)
        defer { relay.terminate() }
        try await Task.sleep(for: .seconds(1))
        api.log.startLiveTraffic(perSecond: perSecond)
        try await Task.sleep(for: .seconds(warmUp))
        let before = (api.counts, api.log.count, ContinuousClock.now, Self.wallMilliseconds())
        try await Task.sleep(for: .seconds(measured))
        let after = (api.counts, api.log.count, ContinuousClock.now, Self.wallMilliseconds())
        // Kept up: every event stamped up to 3 s before the end arrives within 10 s more.
        let due = api.log.allEvents.filter { $0.timestamp <= after.3 - 3_000 }.map { "live:\($0.eventID)" }
        _ = await receiver.waitUntil(timeout: .seconds(10)) { record in due.allSatisfy { record.countsByWebhookID[$0] != nil } }
        let delivered = receiver.record.countsByWebhookID
        let missing = due.filter { delivered[$0] == nil }.count
        var latencies: [Double] = []
        if latency {
            for request in receiver.record.requests {
                guard let body = try? JSONParser.parse(request.body).objectValue, let text = body["timestamp"]?.stringValue,
                    let time = Timestamp(iso8601: text), time.millisecondsSinceEpoch >= before.3
                else { continue }
                latencies.append(Double(request.receivedAt - time.millisecondsSinceEpoch))
            }
            latencies.sort()
        }
        api.log.stopLiveTraffic()
        try await api.shutdown()
        try await receiver.shutdown()
        func percentile(_ p: Double) -> Double? {
            latencies.isEmpty ? nil : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]
        }
        return Result(
            perSecond: perSecond, requests: after.0.requests - before.0.requests, events: after.1 - before.1,
            seconds: before.2.duration(to: after.2) / .seconds(1), eventsServed: after.0.eventsServed - before.0.eventsServed,
            missing: missing, status429: (after.0.byStatus[429] ?? 0) - (before.0.byStatus[429] ?? 0),
            p50: percentile(0.5), p99: percentile(0.99), latencySamples: latencies.count)
    }

    static func wallMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// One line for the table.
    static func describe(_ result: Result) -> String {
        var line = String(
            format: "live %.0f/s: %d requests for %d events = %.1f per 1,000 (%.1f requests/s, %.2f reads per event), %d missing, %d answered 429",
            result.perSecond, result.requests, result.events, result.requestsPer1000, result.requestsPerSecond,
            result.readsPerEvent, result.missing, result.status429)
        if let p50 = result.p50, let p99 = result.p99 {
            line += String(format: ", latency p50 %.0f ms p99 %.0f ms over %d", p50, p99, result.latencySamples)
        }
        return line
    }
}
