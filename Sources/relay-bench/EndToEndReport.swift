import Foundation

/// Runs the end-to-end measurements and prints a table and `bench-results.json`.
struct EndToEndReport {
    let relayBinary: String

    func run() async throws {
        let bench = EndToEndBenchmark(relayBinary: relayBinary)
        let backlog = Int(ProcessInfo.processInfo.environment["BENCH_BACKLOG"] ?? "") ?? 100_000
        print("== End to end: the daemon as a child process, simulator and receiver in this process")
        let single = try await bench.drain(backlog: backlog, batchSize: 1, subscriptions: 1, concurrency: 16)
        let batched = try await bench.drain(backlog: backlog, batchSize: 50, subscriptions: 1, concurrency: 4)
        let five = try await bench.drain(backlog: backlog / 5, batchSize: 50, subscriptions: 5, concurrency: 4)
        let latency = try await bench.latency(perSecond: 100, seconds: 20)
        let ready = try await bench.startup(delivered: 1_000_000)
        // What a steady stream costs, once both edges are at work (about three minutes each).
        let live = LiveBenchmark(relayBinary: relayBinary)
        print("== Live stream: pollInterval 1s, lookback 60s, \(live.warmUp) s warm-up then \(live.measured) s measured")
        let live100 = try await live.run(perSecond: 100, apiLimited: false, latency: true)
        print(LiveBenchmark.describe(live100))
        let live1000 = try await live.run(perSecond: 1_000, apiLimited: false, latency: false)
        print(LiveBenchmark.describe(live1000))
        // The highest rate kept up with inside the API's 100 requests/s: the ladder's highest with nothing missing.
        var sustained = 0.0
        for rate in [4_500.0, 5_000.0] {
            let result = try await live.run(perSecond: rate, apiLimited: true, latency: false)
            print(LiveBenchmark.describe(result))
            guard result.missing == 0, result.requestsPerSecond <= 100 else { break }
            sustained = rate
        }

        var rows: [(String, String, String)] = []
        rows.append(("events/s, batchSize 1 (concurrency 16)", String(format: "%.0f", single.eventsPerSecond), ">= 10000"))
        rows.append(("events/s, batchSize 50", String(format: "%.0f", batched.eventsPerSecond), ">= 50000"))
        rows.append(("relay CPU s per 10,000 events, batchSize 1", String(format: "%.3f", single.cpuPer10k), ""))
        rows.append(("relay CPU s per 10,000 events, batchSize 50", String(format: "%.3f", batched.cpuPer10k), ""))
        rows.append(("peak RSS MiB, \(backlog)-event drain, batchSize 1", String(format: "%.1f", single.peakRSSMiB), "<= 64"))
        rows.append(("idle RSS MiB, caught up", String(format: "%.1f", single.idleRSSMiB), "<= 24"))
        rows.append(("latency p50 ms, 100 events/s, pollInterval 1s", String(format: "%.0f", latency.p50), ""))
        rows.append(("latency p99 ms, 100 events/s, pollInterval 1s", String(format: "%.0f", latency.p99), "<= 1100"))
        rows.append(("API requests per 1,000 events, 1 subscription", String(format: "%.2f", batched.requestsPer1000), "<= 10.5"))
        rows.append(("API requests per 1,000 events, 5 subscriptions", String(format: "%.2f", Double(five.apiRequests) / Double(backlog / 5) * 1000), "<= 10.5"))
        rows.append(("start to READY s, 1,000,000 delivered in the state", String(format: "%.3f", ready), "<= 0.200"))
        rows.append(("live 100/s: API requests per 1,000 events", String(format: "%.1f", live100.requestsPer1000), "<= 30"))
        rows.append(("live 1,000/s: API requests per 1,000 events", String(format: "%.1f", live1000.requestsPer1000), "<= 23"))
        rows.append(("live: highest rate kept up with in 100 requests/s", String(format: "%.0f", sustained), ">= 4500"))
        rows.append(("live 100/s: latency p99 ms, visible to received", String(format: "%.0f", live100.p99 ?? -1), "<= 1100"))
        for (name, value, target) in rows {
            print(name.padding(toLength: 52, withPad: " ", startingAt: 0) + value.padding(toLength: 12, withPad: " ", startingAt: 0) + target)
        }
        let json = "{" + rows.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}\n"
        try json.write(toFile: "bench-results.json", atomically: true, encoding: .utf8)
        print("(also in bench-results.json; latency over \(latency.samples) deliveries)")
    }
}
