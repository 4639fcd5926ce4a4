#if canImport(Glibc)
import Glibc
#endif
import HTTPServer
import Logging
import ServiceLifecycle

/// Serves `/metrics`, `/healthz` and `/readyz`. Bound before the daemon starts, so that an address in use stops it
/// before anything is polled; served until the rest of the daemon has stopped.
public struct MetricsEndpoint: Service {
    private let server: HTTPServer

    /// Binds `listen` (port 0: any free port) and starts serving.
    public static func start(
        listen: ListenAddress, render: @escaping @Sendable () async -> [UInt8], isReady: @escaping @Sendable () -> Bool, logger: Logger
    ) async throws -> MetricsEndpoint {
        let handler: HTTPServer.Handler = { request in
            switch request.path {
            case "/metrics":
                // Computed when scraped (queue gauges read from the store), so answered off the event loop.
                return .later { .respond(status: 200, headers: [("content-type", "text/plain; version=0.0.4; charset=utf-8")], body: await render()) }
            case "/healthz":
                return .text("ok\n", status: 200)
            case "/readyz":
                return isReady() ? .text("ready\n", status: 200) : .text("not ready: a source has not polled successfully lately\n", status: 503)
            default:
                return .text("not found\n", status: 404)
            }
        }
        // A host without IPv6 cannot bind "::"; every IPv4 interface is what ":port" then means.
        let host = listen.host == ListenAddress.everyInterface && !hasIPv6() ? "0.0.0.0" : listen.host
        do {
            let server = try await HTTPServer.start(HTTPServer.Configuration(host: host, port: listen.port, maxRequestBodyBytes: 4096), handler: handler)
            logger.info("metrics listening", metadata: ["address": "\(ListenAddress(host: host, port: server.port))"])
            return MetricsEndpoint(server: server)
        } catch {
            throw RelayStartError(description: "cannot listen on \(listen) for metrics: \(error)")
        }
    }

    /// The port bound.
    public var port: Int { server.port }

    /// Closes the listener at once, outside a service group.
    public func stop() async throws { try await server.shutdown() }

    public func run() async throws {
        try? await gracefulShutdown()
        try await server.shutdown()
    }
}

/// Start-up failed for a reason other than the config or the store.
public struct RelayStartError: Error, CustomStringConvertible {
    public let description: String
}

/// Whether this host can open IPv6 sockets at all (a kernel without IPv6, or a container without it, cannot).
private func hasIPv6() -> Bool {
    let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    close(fd)
    return true
}
