import CurlHTTP
import Logging
import RelayCore
import Testing

/// The metrics listener on real sockets.
@Suite struct MetricsEndpointTests {
    /// ":PORT", as Prometheus exporters take it, answers on IPv4 and, where the host has it, IPv6 loopback.
    @Test func anEmptyHostListensOnEveryInterface() async throws {
        let listen = try #require(ListenAddress(parsing: ":0"))
        let endpoint = try await MetricsEndpoint.start(
            listen: listen, render: { Array("relay_up 1\n".utf8) }, isReady: { true }, logger: Logger(label: "test"))
        let client = CurlHTTPClient()
        // A long timeout: `/metrics` is answered by a task, and while the suite runs, CPU-bound tests (the fuzzers,
        // the property tests) can hold both threads of a 2-core machine's cooperative pool for seconds. CI timed out
        // at 5 s twice. What this test checks is where it listens, not how fast it answers.
        func get(_ url: String) async throws -> HTTPResponse {
            try await client.execute(HTTPRequest(method: "GET", url: url, headers: [:], body: [], timeout: .seconds(60)))
        }
        let viaIPv4 = try await get("http://127.0.0.1:\(endpoint.port)/metrics")
        #expect(viaIPv4.status == 200)
        #expect(viaIPv4.body == Array("relay_up 1\n".utf8))
        if let viaIPv6 = try? await get("http://[::1]:\(endpoint.port)/healthz") {
            #expect(viaIPv6.status == 200)
        }
        await client.shutdown()
        try await endpoint.stop()
    }
}
