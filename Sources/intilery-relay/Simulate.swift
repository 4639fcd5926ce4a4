import ArgumentParser
import Foundation
import IntilerySimulator
import UnixSignals

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the built-in fake Events API and webhook receiver alone, for trying configs by hand.",
        discussion: "Prints the base URL, token and ports, then a line per second of what was served and received. Ctrl-C stops it."
    )

    @Option(name: .long, help: "Port of the fake Events API (0: any free port).")
    var apiPort: Int = 8080

    @Option(name: .long, help: "Port of the webhook receiver (0: any free port).")
    var sinkPort: Int = 8081

    @Option(name: .long, help: "Events generated over the hour before start.")
    var backlog: Int = 1000

    @Option(name: .long, help: "Live events generated per second.")
    var rate: Double = 10

    @Option(name: .long, help: "Events per second the API allows per token, or 0 for no limit (default: the API's 100).")
    var rateLimit: Double = 100

    @Option(name: .long, help: ArgumentHelp("The page body shape: \(ResponseShape.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "shape"))
    var shape: String = ResponseShape.array.rawValue

    @Option(name: .long, help: ArgumentHelp("Fault knobs: error=P, unavailable=P, malformed=P, truncated=P, latency=50ms.", valueName: "spec"))
    var faults: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "A webhook secret (whsec_...): every request's signature is verified with it, and a bad one gets 401.",
            valueName: "secret"))
    var verifySecret: String?

    @Option(
        name: .customLong("sink-path"),
        help: ArgumentHelp(
            "How the receiver answers one path (repeatable): /bad=400, /slow=delay:3s, /busy=429:retry-after=1, /flaky=500:p=0.3, /down=refuse. Other paths answer 200.",
            valueName: "path=behaviour"))
    var sinkPaths: [String] = []

    func validate() throws {
        guard (0...65535).contains(apiPort), (0...65535).contains(sinkPort) else {
            throw ValidationError("ports must be from 0 to 65535")
        }
        guard backlog >= 0, rate >= 0, rateLimit >= 0 else { throw ValidationError("backlog, rate and rate-limit must not be negative") }
        guard ResponseShape(rawValue: shape) != nil else { throw ValidationError("unknown shape \(shape)") }
        if let faults {
            do { _ = try SimulatorFaults(parsing: faults) } catch { throw ValidationError("\(error)") }
        }
        for text in sinkPaths {
            do { _ = try SinkPathBehaviour(parsing: text) } catch { throw ValidationError("\(error)") }
        }
        if let verifySecret, !verifySecret.hasPrefix("whsec_") {
            throw ValidationError("--verify-secret must be a whsec_... secret, as in the subscription's webhook.secret")
        }
    }

    func run() async throws {
        var settings = FakeEventsAPI.Settings()
        settings.shape = ResponseShape(rawValue: shape) ?? .array
        settings.rateLimit = rateLimit > 0 ? (rateLimit, Int(rateLimit * 5)) : nil
        if let faults { settings.faults = try SimulatorFaults(parsing: faults) }
        let api = try await Self.listening(port: apiPort, option: "--api-port", for: "the Events API") {
            try await FakeEventsAPI.start(port: apiPort, settings: settings)
        }
        let receiver: WebhookReceiver
        do {
            receiver = try await Self.listening(port: sinkPort, option: "--sink-port", for: "the webhook receiver") {
                try await WebhookReceiver.start(port: sinkPort)
            }
        } catch {
            try await api.shutdown()
            throw error
        }
        receiver.keep(bodies: false, requests: false)
        let behaviours = sinkPaths.compactMap { try? SinkPathBehaviour(parsing: $0) }
        for behaviour in behaviours { behaviour.apply(to: receiver) }
        if let verifySecret, !receiver.requireSignatures(secret: verifySecret) {
            try await api.shutdown()
            try await receiver.shutdown()
            throw ValidationError("--verify-secret is not a whsec_ secret with a base64 key")
        }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        api.log.addBacklog(count: backlog, from: now - 3_600_000, to: now)
        if rate > 0 { api.log.startLiveTraffic(perSecond: rate) }

        printLine("Events API   \(api.eventsURL)")
        printLine("  source     \"baseURL\": \"\(api.baseURL)\", \"clientId\": \"\(api.account.clientId)\", \"accountId\": \"\(api.account.accountId)\", \"brandId\": \"\(api.account.brandId)\", \"authToken\": \"\(api.account.authToken)\"")
        printLine("Receiver     \(receiver.baseURL)/<any path>  (answers 200\(behaviours.isEmpty ? "" : " but on the paths below"))")
        for behaviour in behaviours { printLine("  \(behaviour.summary)") }
        if verifySecret != nil { printLine("  every request's signature is verified; a missing or bad one gets 401") }
        printLine("Backlog \(backlog) events over the last hour; \(rate) live events/s. Ctrl-C stops.")

        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var before = api.counts
                var receivedBefore = 0
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    let counts = api.counts
                    let received = receiver.record.countsByPath.values.reduce(0, +)
                    printLine(
                        "api: \(counts.pages - before.pages) pages, \(counts.eventsServed - before.eventsServed) events, "
                            + "\(counts.rateLimited - before.rateLimited) x 429 | receiver: \(received - receivedBefore) requests")
                    before = counts
                    receivedBefore = received
                }
            }
            for await _ in signals { break }
            group.cancelAll()
        }
        try await api.shutdown()
        try await receiver.shutdown()
    }

    /// Starts a server on `port`, turning "address in use" into a line that names the port and the option.
    static func listening<Server>(port: Int, option: String, for what: String, _ start: () async throws -> Server) async throws -> Server {
        do {
            return try await start()
        } catch {
            if "\(error)".contains("Address already in use") {
                printToStandardError("intilery-relay simulate: port \(port) is in use: cannot listen for \(what); choose another with \(option) (0 picks a free port)")
            } else {
                printToStandardError("intilery-relay simulate: cannot listen on port \(port) for \(what) (\(option)): \(error)")
            }
            throw ExitStatus.failure
        }
    }
}
