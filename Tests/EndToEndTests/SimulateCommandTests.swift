import CurlHTTP
import Foundation
import IntilerySimulator
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
        try await withTemporaryDirectory { directory in
            let simulator = try RelayProcess(
                arguments: ["simulate", "--api-port", "0", "--sink-port", "0", "--backlog", "0", "--rate", "0",
                            "--sink-path", "/bad=400", "--sink-path", "/busy=429:retry-after=1"],
                environment: [:], directory: directory)
            defer { simulator.signal(SIGINT) }
            #expect(await simulator.waitForLog(containing: "/busy answers 429 with Retry-After: 1", timeout: .seconds(20)), "\(simulator.log)")
            #expect(simulator.log.contains("/bad answers 400"))
            let receiverLine = simulator.log.split(separator: "\n").first { $0.hasPrefix("Receiver") }
            let base = try #require(receiverLine?.split(separator: " ").first { $0.hasPrefix("http://") }).replacingOccurrences(of: "/<any", with: "")
            let client = CurlHTTPClient()
            defer { Task { await client.shutdown() } }
            func status(_ path: String) async throws -> Int {
                try await client.execute(HTTPRequest(method: "POST", url: base + path, headers: [:], body: Array("{}".utf8), timeout: .seconds(5))).status
            }
            #expect(try await status("/bad") == 400)
            #expect(try await status("/busy") == 429)
            #expect(try await status("/fine") == 200)
            simulator.signal(SIGINT)
            #expect(await simulator.waitForExit(timeout: .seconds(10)) == 0)
        }
    }
}
