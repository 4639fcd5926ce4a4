import CurlHTTP
import Foundation
import IntilerySimulator
import RelayCore
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `intilery-relay simulate` as a person runs it by hand: the real binary, real ports.
@Suite struct SimulateCommandTests {
    @Test func aBusyPortNamesThePortAndTheOption() async throws {
        let occupant = try await WebhookReceiver.start()
        let port = occupant.port
        let api = try await RelayBinary.run(["simulate", "--api-port", "\(port)", "--sink-port", "0"])
        let sink = try await RelayBinary.run(["simulate", "--api-port", "0", "--sink-port", "\(port)"])
        try await occupant.shutdown()
        #expect(api.status == 1)
        #expect(api.standardError.contains("port \(port) is in use: cannot listen for the Events API; choose another with --api-port"), "\(api.standardError)")
        #expect(sink.status == 1)
        #expect(sink.standardError.contains("port \(port) is in use: cannot listen for the webhook receiver; choose another with --sink-port"), "\(sink.standardError)")
        #expect(!api.standardError.contains("bind(descriptor"))
    }

    @Test func sinkPathsAnswerAsAskedAndTheBannerSaysSo() async throws {
        try await withSimulator(["--sink-path", "/bad=400", "--sink-path", "/busy=429:retry-after=1"]) { simulator, sink async throws in
            #expect(await simulator.waitForLog(containing: "/busy answers 429 with Retry-After: 1", timeout: .seconds(20)), "\(simulator.log)")
            #expect(simulator.log.contains("/bad answers 400"))
            #expect(try await sink.status("/bad", [:]) == 400)
            #expect(try await sink.status("/busy", [:]) == 429)
            #expect(try await sink.status("/fine", [:]) == 200)
        }
    }

    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    static let body = #"{"test": 2432232314}"#

    /// Headers that sign ``body`` with ``secret`` now, as the relay signs (the receiver refuses old timestamps).
    static func signedHeaders() throws -> HTTPHeaders {
        let key = try #require(WebhookSigningKey(Secret(secret, origin: .literal)))
        let (id, timestamp) = ("msg_\(UUID().uuidString)", String(Int(Date().timeIntervalSince1970)))
        return [
            "webhook-id": id, "webhook-timestamp": timestamp,
            "webhook-signature": WebhookRequestBuilder.signature(id: id, timestamp: timestamp, body: Array(body.utf8), key: key),
        ]
    }

    @Test func verifySecretAnswers401BeforeAnyPathsOwnAnswer() async throws {
        let signed = try Self.signedHeaders()
        try await withSimulator(["--verify-secret", Self.secret, "--sink-path", "/bad=400"]) { simulator, sink async throws in
            #expect(simulator.log.contains("a missing or bad one gets 401"), "\(simulator.log)")
            #expect(try await sink.status("/any", signed) == 200)
            #expect(try await sink.status("/any", [:]) == 401)
            // The signature is checked first: a path's own answer is for signed requests.
            #expect(try await sink.status("/bad", signed) == 400)
            #expect(try await sink.status("/bad", [:]) == 401)
        }
        let refused = try await RelayBinary.run(["simulate", "--api-port", "0", "--sink-port", "0", "--verify-secret", "not-a-secret"])
        #expect(refused.status == 64)
        #expect(refused.standardError.contains("--verify-secret must be a whsec_... secret"), "\(refused.standardError)")
    }

    /// The demo a new user runs first: deliveries to its three subscriptions, each row with the event's age (a
    /// backlog event's age is no delivery latency, so the column is not called that).
    @Test func aShortDemoDeliversToEachSubscriptionAndShowsEventAges() async throws {
        let demo = try await RelayBinary.run(["demo", "--duration", "3s"])
        #expect(demo.status == 0, "\(demo.standardError)")
        let lines = demo.standardOutput.split(separator: "\n").map(String.init)
        let header = try #require(lines.first { $0.hasPrefix("time ") }, "\(demo.standardOutput)")
        #expect(header.contains("event age") && !header.contains("latency"), "\(header)")
        let signed = lines.filter { $0.contains(" email-clicks ") && $0.hasSuffix(" valid") }
        #expect(!signed.isEmpty, "email-clicks requests are signed: \(demo.standardOutput)")
        #expect(lines.contains { $0.range(of: #"^\d\d:\d\d:\d\d\.\d{3} .* 200 +\d+ m?s "#, options: .regularExpression) != nil })
        for subscription in ["email-clicks", "no-pages"] {
            #expect(
                lines.contains { $0.range(of: "^  \(subscription) +[1-9][0-9]* events in [1-9][0-9]* requests$", options: .regularExpression) != nil },
                "\(subscription) in the totals: \(demo.standardOutput)")
        }
    }

    /// The simulator's receiver, as a webhook sender sees it.
    struct Sink {
        let client: CurlHTTPClient
        let base: String

        /// POSTs ``SimulateCommandTests/body`` to `path`; the answer's status.
        func status(_ path: String, _ headers: HTTPHeaders) async throws -> Int {
            try await client.execute(
                HTTPRequest(method: "POST", url: base + path, headers: headers, body: Array(SimulateCommandTests.body.utf8), timeout: .seconds(5))
            ).status
        }
    }

    /// `simulate` with `arguments` as a child process, up and listening. Stopped with Ctrl-C at the end.
    func withSimulator(_ arguments: [String], _ body: (RelayProcess, Sink) async throws -> Void) async throws {
        try await withTemporaryDirectory { directory in
            let simulator = try RelayProcess(
                arguments: ["simulate", "--api-port", "0", "--sink-port", "0", "--backlog", "0", "--rate", "0"] + arguments,
                environment: [:], directory: directory)
            defer { simulator.signal(SIGINT) }
            #expect(await simulator.waitForLog(containing: "Ctrl-C stops", timeout: .seconds(20)), "\(simulator.log)")
            let receiverLine = simulator.log.split(separator: "\n").first { $0.hasPrefix("Receiver") }
            let base = try #require(receiverLine?.split(separator: " ").first { $0.hasPrefix("http://") }).replacingOccurrences(of: "/<any", with: "")
            let client = CurlHTTPClient()
            defer { Task { await client.shutdown() } }
            try await body(simulator, Sink(client: client, base: base))
            simulator.signal(SIGINT)
            #expect(await simulator.waitForExit(timeout: .seconds(10)) == 0)
        }
    }
}
