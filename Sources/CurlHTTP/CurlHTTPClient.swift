/// An async HTTP client over libcurl's multi interface: one driver thread serves every request.
///
/// Connections are kept alive and reused between requests to the same host, HTTP/2 is used where a TLS server
/// offers it, only `http` and `https` URLs are accepted, redirects are returned as they are and never
/// followed, and TLS certificates are always verified. Safe to call from many tasks at once. Call
/// ``shutdown()`` when done: requests still running then fail with ``CurlHTTPError/shutDown(url:)``.
public final class CurlHTTPClient: Sendable {
    /// Settings shared by every request of one client.
    public struct Configuration: Sendable {
        /// The `User-Agent` sent unless a request sets its own. Default: none (curl sends none either).
        public var userAgent: String?
        /// How many idle connections are kept open for reuse. Default 64.
        public var maxCachedConnections: Int
        /// At most this many connections to one host at once, 0 for no limit. Default 0.
        public var maxConnectionsPerHost: Int

        /// Creates a configuration; see each property for its default.
        public init(userAgent: String? = nil, maxCachedConnections: Int = 64, maxConnectionsPerHost: Int = 0) {
            self.userAgent = userAgent
            self.maxCachedConnections = maxCachedConnections
            self.maxConnectionsPerHost = maxConnectionsPerHost
        }
    }

    private let configuration: Configuration
    private let driver: CurlMultiDriver

    /// Starts the driver thread.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        driver = CurlMultiDriver(
            maxCachedConnections: configuration.maxCachedConnections,
            maxConnectionsPerHost: configuration.maxConnectionsPerHost
        )
    }

    /// Sends a request and returns its response, whatever the status.
    ///
    /// - Throws: ``CurlHTTPError`` for everything short of a response; cancelling the calling task aborts the
    ///   transfer and throws ``CurlHTTPError/cancelled(url:)``.
    public func execute(_ request: HTTPRequest) async throws(CurlHTTPError) -> HTTPResponse {
        let transfer = try CurlTransfer(request, userAgent: configuration.userAgent)
        let driver = self.driver
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    guard transfer.wait(with: continuation) else { return }
                    if !driver.submit(transfer) {
                        transfer.finish(.failure(.shutDown(url: request.url)))
                    }
                }
            } onCancel: {
                if transfer.markCancelled() { driver.cancel(transfer) }
            }
        } catch let error as CurlHTTPError {
            throw error
        } catch {
            throw .other(url: request.url, detail: "\(error)")
        }
    }

    /// Fails requests still running, stops the driver thread and waits for it.
    public func shutdown() async {
        await driver.shutdown()
    }
}
