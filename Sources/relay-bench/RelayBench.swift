import Foundation

/// `relay-bench`: the measurements `make bench` reports. Run from a release build.
@main
struct RelayBench {
    static func main() async throws {
        let arguments = CommandLine.arguments.dropFirst()
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("intilery-relay").path
        if arguments.first == "e2e" {
            try await EndToEndReport(relayBinary: binary).run()
            return
        }
        if arguments.first == "drain" {
            // relay-bench drain BACKLOG [BATCH [SUBSCRIPTIONS [CONCURRENCY [API_LATENCY_MS]]]]: one end-to-end drain,
            // for iterating.
            let numbers = arguments.dropFirst().compactMap { Int($0) }
            let drain = try await EndToEndBenchmark(relayBinary: binary).drain(
                backlog: numbers.first ?? 100_000, batchSize: numbers.dropFirst().first ?? 1,
                subscriptions: numbers.dropFirst(2).first ?? 1, concurrency: numbers.dropFirst(3).first ?? 16,
                apiLatency: .milliseconds(numbers.dropFirst(4).first ?? 0))
            print(EndToEndBenchmark.describe(drain))
            return
        }
        if arguments.first == "store" {
            // relay-bench store [EVENTS [SUBSCRIPTIONS]]: the state store's writer alone, for changes to it.
            let numbers = arguments.dropFirst().compactMap { Int($0) }
            let (events, subscriptions) = (numbers.first ?? 100_000, numbers.dropFirst().first ?? 1)
            let result = try await StoreWriterBenchmark(events: events, subscriptions: subscriptions).run()
            print(StoreWriterBenchmark.describe(result, subscriptions: subscriptions))
            return
        }
        if arguments.first == "postgres" {
            // relay-bench postgres: several instances on the cluster RELAY_TEST_POSTGRES_SOCKET names (scripts/with-postgres).
            try await PostgresBenchmark(relayBinary: binary).run()
            return
        }
        if arguments.first == "live" {
            // relay-bench live RATE [--api-limited] [--latency]
            let rate = arguments.dropFirst().first.flatMap { Double($0) } ?? 100
            let result = try await LiveBenchmark(relayBinary: binary).run(
                perSecond: rate, apiLimited: arguments.contains("--api-limited"), latency: arguments.contains("--latency"))
            print(LiveBenchmark.describe(result))
            return
        }
        if arguments.first == "catchup" {
            let backlog = arguments.dropFirst().first.flatMap { Int($0) } ?? 1_000_000
            print(CatchUpBenchmark.describe(try await CatchUpBenchmark(relayBinary: binary).run(backlog: backlog)))
            return
        }
        if arguments.first == "strict" {
            let events = arguments.dropFirst().first.flatMap { Int($0) } ?? 100_000
            let rate = try await StrictDrainBenchmark(events: events).run()
            print(String(format: "strict drain: %d queued events at %.0f events/s (target 1000)", events, rate))
            return
        }
        if arguments.first == "state-size" {
            // relay-bench state-size [EVENTS]: the state file for the same queued events, one subscription and five.
            let benchmark = StateSizeBenchmark(events: arguments.dropFirst().first.flatMap { Int($0) } ?? 100_000)
            print(benchmark.describe(try await benchmark.measure()))
            return
        }
        if arguments.first == "isolation" {
            let events = arguments.dropFirst().first.flatMap { Int($0) } ?? 10_000
            let (alone, crowded) = try await IsolationBenchmark(events: events).run()
            print(String(
                format: "isolation: %d events to a healthy webhook in %.2f s alone, %.2f s beside a hanging and a failing one (%+.0f%%, target within 20%%)",
                events, alone, crowded, (crowded / alone - 1) * 100))
            return
        }
        guard arguments.first == "ingest" else {
            print("usage: relay-bench ingest [BACKLOG ...] | isolation [EVENTS] | state-size [EVENTS] | strict [EVENTS] | catchup [BACKLOG] | live RATE [--api-limited] [--latency] | e2e")
            exit(64)
        }
        let backlogs = arguments.dropFirst().compactMap { Int($0) }
        var rows: [String] = []
        for backlog in backlogs.isEmpty ? [100_000] : backlogs {
            let result = try await IngestBenchmark(backlog: backlog, relayBinary: binary).run()
            let row = String(
                format: "ingest: %d events in %.2f s = %.0f events/s (%d pages), peak RSS %.1f MiB",
                result.events, result.seconds, result.eventsPerSecond, result.pages, Double(result.peakRSSKiB) / 1024)
            print(row)
            rows.append(row)
        }
    }
}
