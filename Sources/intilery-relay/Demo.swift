import ArgumentParser
import Foundation
import IntilerySimulator
import Logging
import RelayCore
import RelayJSON
import ServiceLifecycle
import Synchronization

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the whole pipeline against the built-in simulator and receiver on loopback, printing each delivery.",
        discussion: "Three subscriptions (an include, an exclude and a where filter; one signed, one batched) over a small backlog and live events. Ctrl-C or --duration ends it with totals."
    )

    @Option(name: .long, help: ArgumentHelp("Stop after this long, such as 30s; default: until Ctrl-C.", valueName: "duration"))
    var duration: String?

    @Option(name: .long, help: "Live events generated per second.")
    var rate: Double = 5

    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    static let subscriptions = ["email-clicks", "no-pages", "big-spenders"]

    func validate() throws {
        if let duration, DurationText.parse(duration) == nil { throw ValidationError("--duration must be a duration such as 30s") }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in RelayLogHandler(label: label, format: .logfmt, level: .warning) }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("intilery-relay-demo-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }

        let api = try await FakeEventsAPI.start()
        let receiver = try await WebhookReceiver.start()
        receiver.keep(bodies: false, requests: false)
        receiver.verifySignatures(on: "/hooks/email-clicks", secret: Self.secret)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        api.log.addBacklog(count: 60, from: now - 120_000, to: now)
        api.log.startLiveTraffic(perSecond: rate)

        let configFile = directory.appendingPathComponent("config.json")
        try Self.config(api: api, receiver: receiver, directory: directory).write(to: configFile, atomically: true, encoding: .utf8)
        let config = try ConfigLoader.load(file: configFile.path, environment: ConfigEnvironment(variables: ["DEMO_TOKEN": api.account.authToken]))

        printLine("intilery-relay \(RelayVersion.current) demo: simulated Events API \(api.baseURL), receiver \(receiver.baseURL)")
        printLine("  email-clicks   include email_click, signed (Standard Webhooks), one event per request")
        printLine("  no-pages       exclude page and identify, envelope payload in batches of up to 10")
        printLine("  big-spenders   where properties.total >= 500, one event per request")
        printLine("Backlog of 60 events, then \(rate) live events/s. Ctrl-C to stop.\n")
        printLine("time          subscription   action        event       status  event age  events  signature")

        let tally = Tally()
        receiver.observe { request in Self.show(request, tally: tally) }
        var logger = Logger(label: "intilery-relay")
        logger.logLevel = .warning
        let daemon = try await RelayDaemon.start(
            configFile: configFile.path, config: config, stateDirectory: directory.appendingPathComponent("state").path,
            environment: ["DEMO_TOKEN": api.account.authToken], logger: logger, notifier: SystemdNotifier(environment: [:]),
            renderMetrics: { [] })
        let group = ServiceGroup(
            configuration: .init(
                services: daemon.services + [
                    .init(
                        service: SummaryService(tally: tally, duration: duration.flatMap(DurationText.parse)),
                        successTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigint, .sigterm], logger: logger))
        try await group.run()
        printLine("\nTotals:")
        for line in tally.summary() { printLine("  " + line) }
        try await api.shutdown()
        try await receiver.shutdown()
    }

    static func config(api: FakeEventsAPI, receiver: WebhookReceiver, directory: URL) -> String {
        #"""
        {"metrics": {"listen": "off"}, "shutdownGrace": "2s",
         "sources": [{"name": "demo", "baseURL": "\#(api.baseURL)", "clientId": "acme", "accountId": "acme", "brandId": "ACME",
                      "authToken": {"env": "DEMO_TOKEN"}, "startFrom": "earliest", "pollInterval": "1s", "lookback": "10s"}],
         "subscriptions": [
           {"name": "email-clicks", "include": ["email_click"],
            "webhook": {"url": "\#(receiver.url("/hooks/email-clicks"))", "secret": "\#(secret)"}},
           {"name": "no-pages", "exclude": ["page", "identify"],
            "webhook": {"url": "\#(receiver.url("/hooks/no-pages"))", "payload": "envelope", "batchSize": 10}},
           {"name": "big-spenders", "where": {"path": "properties.total", "op": "gte", "value": 500},
            "webhook": {"url": "\#(receiver.url("/hooks/big-spenders"))"}}]}
        """#
    }

    /// One line per request: the first event's action, id, and age when it arrived (from its timestamp to receipt:
    /// a backlog event's age, a live event's delivery delay).
    static func show(_ request: ReceivedWebhook, tally: Tally) {
        let subscription = String(request.path.split(separator: "/").last ?? "")
        var events: [JSONObject] = []
        if let body = try? JSONParser.parse(request.body) {
            let items = body.arrayValue ?? [body]
            events = items.compactMap { item in
                guard let object = item.objectValue else { return nil }
                return object["data"]?.objectValue ?? object
            }
        }
        let first = events.first
        let action = first?["action"]?.stringValue ?? "?"
        let id = first?["eventID"]?.stringValue ?? "?"
        let time = first?["timestamp"]?.stringValue.flatMap { Timestamp(iso8601: $0) }
        let age = time.map { Self.age(milliseconds: max(0, request.receivedAt - $0.millisecondsSinceEpoch)) } ?? "-"
        let signature = request.signatureValid.map { $0 ? "valid" : "INVALID" } ?? "-"
        tally.record(subscription: subscription, events: events.count)
        let clock = Timestamp(millisecondsSinceEpoch: request.receivedAt).iso8601.dropFirst(11).prefix(12)
        printLine(
            "\(clock)  \(pad(subscription, 14)) \(pad(action, 13)) \(pad(id, 11)) \(pad(String(request.answeredStatus ?? 0), 7)) \(pad(age, 10)) \(pad(String(events.count), 7)) \(signature)")
    }

    static func age(milliseconds: Int64) -> String {
        milliseconds < 10_000 ? "\(milliseconds) ms" : "\(milliseconds / 1000) s"
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}

/// Deliveries seen per subscription.
final class Tally: Sendable {
    private let counts = Mutex<[String: (requests: Int, events: Int)]>([:])

    func record(subscription: String, events: Int) {
        counts.withLock {
            let old = $0[subscription] ?? (0, 0)
            $0[subscription] = (old.requests + 1, old.events + events)
        }
    }

    func summary() -> [String] {
        let snapshot = counts.withLock { $0 }
        return Demo.subscriptions.map { name in
            let entry = snapshot[name] ?? (0, 0)
            return "\(Demo.pad(name, 14)) \(entry.events) events in \(entry.requests) requests"
        }
    }
}

/// Prints a summary every 5 seconds, and ends the demo after its duration.
struct SummaryService: Service {
    let tally: Tally
    let duration: Duration?

    func run() async throws {
        let started = ContinuousClock.now
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: .seconds(5))
                printLine("-- " + tally.summary().map { $0.replacingOccurrences(of: "  ", with: " ") }.joined(separator: " | "))
                if let duration, ContinuousClock.now - started >= duration { return }
            }
        }
    }
}
