import CCurl
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
    private let easyHandles: CurlEasyPool

    /// Starts the driver thread.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        driver = CurlMultiDriver(
            maxCachedConnections: configuration.maxCachedConnections,
            maxConnectionsPerHost: configuration.maxConnectionsPerHost
        )
        easyHandles = CurlEasyPool(capacity: configuration.maxCachedConnections)
    }

    /// Sends a request and returns its response, whatever the status.
    ///
    /// - Throws: ``CurlHTTPError`` for everything short of a response; cancelling the calling task aborts the
    ///   transfer and throws ``CurlHTTPError/cancelled(url:)``.
    public func execute(_ request: HTTPRequest) async throws(CurlHTTPError) -> HTTPResponse {
        let transfer = try CurlTransfer(request, userAgent: configuration.userAgent, pool: easyHandles)
        let driver = self.driver
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    guard transfer.call({ continuation.resume(with: $0.mapError { $0 as any Error }) }) else { return }
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

    /// A request made ready to start with a completion rather than awaited: no task waits on it, so that a
    /// caller with many requests in flight pays no task switch per response.
    public final class PreparedRequest: Sendable {
        fileprivate let transfer: CurlTransfer
        fileprivate let driver: CurlMultiDriver

        fileprivate init(transfer: CurlTransfer, driver: CurlMultiDriver) {
            self.transfer = transfer
            self.driver = driver
        }

        /// Starts the request. `completion` runs once, on the client's driver thread (or on this thread if the
        /// request was cancelled or the client shut down first): it must be quick and must not block.
        public func start(completion: @escaping @Sendable (Result<HTTPResponse, CurlHTTPError>) -> Void) {
            guard transfer.call(completion) else { return }
            if !driver.submit(transfer) { transfer.finish(.failure(.shutDown(url: transfer.request.url))) }
        }

        /// Aborts the request; its completion gets ``CurlHTTPError/cancelled(url:)`` unless it has ended already.
        public func cancel() {
            if transfer.markCancelled() { driver.cancel(transfer) }
        }
    }

    /// Prepares a request to ``PreparedRequest/start(completion:)``.
    ///
    /// - Throws: ``CurlHTTPError`` when the request cannot be made (a scheme other than http or https, a line
    ///   break in a header).
    public func prepare(_ request: HTTPRequest) throws(CurlHTTPError) -> PreparedRequest {
        PreparedRequest(transfer: try CurlTransfer(request, userAgent: configuration.userAgent, pool: easyHandles), driver: driver)
    }

    /// Fails requests still running, stops the driver thread and waits for it.
    public func shutdown() async {
        await driver.shutdown()
        easyHandles.close()
    }
}

extension CurlHTTPClient {
    /// libcurl's version and, in brackets, the TLS, compression and resolver libraries it uses, such as
    /// "7.88.1 (OpenSSL/3.0.15 zlib/1.2.13 ...)": what `intilery-relay version` reports.
    public static var libraryVersion: String {
        guard let text = curl_version() else { return "unknown" }
        let parts = String(cString: text).split(separator: " ", maxSplits: 1)
        let own = parts.first.map { $0.hasPrefix("libcurl/") ? String($0.dropFirst(8)) : String($0) } ?? "unknown"
        return parts.count > 1 ? "\(own) (\(parts[1]))" : own
    }
}
