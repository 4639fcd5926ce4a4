/// Why a request failed. Names where it went (scheme, host, port), never a path, query or header value.
public struct CurlHTTPError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of failure, whatever the URL or detail.
    public enum Code: Sendable, Equatable {
        case invalidURL
        case invalidRequest
        case protocolNotAllowed
        case dnsFailure
        case connectionRefused
        case timeout
        case tls
        case bodyTooLarge(limit: Int)
        case connectionFailed
        case cancelled
        case shutDown
        case other
    }

    /// What kind of failure.
    public let code: Code
    /// `scheme://host:port` of the request.
    public let url: String
    /// libcurl's own explanation, when it gave one.
    public let detail: String

    private init(_ code: Code, url: String, detail: String = "") {
        self.code = code
        self.url = RedactedURL(url).description
        self.detail = detail
    }

    /// The URL could not be parsed.
    public static func invalidURL(_ url: String) -> Self { .init(.invalidURL, url: url) }
    /// The request cannot be sent as given (a header with a line break, say).
    public static func invalidRequest(url: String, detail: String) -> Self { .init(.invalidRequest, url: url, detail: detail) }
    /// The URL's scheme is not http or https.
    public static func protocolNotAllowed(_ url: String) -> Self { .init(.protocolNotAllowed, url: url) }
    /// The host name did not resolve.
    public static func dnsFailure(url: String, detail: String = "") -> Self { .init(.dnsFailure, url: url, detail: detail) }
    /// Nothing accepted the connection.
    public static func connectionRefused(url: String, detail: String = "") -> Self {
        .init(.connectionRefused, url: url, detail: detail)
    }
    /// The connect or total timeout passed.
    public static func timeout(url: String, detail: String = "") -> Self { .init(.timeout, url: url, detail: detail) }
    /// The TLS handshake or certificate check failed.
    public static func tls(url: String, detail: String = "") -> Self { .init(.tls, url: url, detail: detail) }
    /// The body exceeded a ``ResponseBodyLimit/failBeyond(_:)`` limit.
    public static func bodyTooLarge(url: String, limit: Int) -> Self { .init(.bodyTooLarge(limit: limit), url: url) }
    /// The connection broke, or the peer sent something that is not HTTP.
    public static func connectionFailed(url: String, detail: String = "") -> Self {
        .init(.connectionFailed, url: url, detail: detail)
    }
    /// The calling task was cancelled.
    public static func cancelled(url: String) -> Self { .init(.cancelled, url: url) }
    /// The client was shut down before the request completed.
    public static func shutDown(url: String) -> Self { .init(.shutDown, url: url) }
    /// Any other libcurl failure.
    public static func other(url: String, detail: String) -> Self { .init(.other, url: url, detail: detail) }

    /// Whether two errors are of the same kind, whatever their URL or detail.
    public func isSameKind(as other: CurlHTTPError) -> Bool {
        if case .bodyTooLarge = code, case .bodyTooLarge = other.code { return true }
        return code == other.code
    }

    /// Whether a retry may succeed: connection-level trouble and timeouts, not refusals by policy.
    public var isTransient: Bool {
        switch code {
        case .dnsFailure, .connectionRefused, .timeout, .tls, .connectionFailed, .other: return true
        case .invalidURL, .invalidRequest, .protocolNotAllowed, .bodyTooLarge, .cancelled, .shutDown: return false
        }
    }

    /// A short fixed label fit for a metric or a dead-letter reason.
    public var shortDescription: String {
        switch code {
        case .invalidURL: return "invalid_url"
        case .invalidRequest: return "invalid_request"
        case .protocolNotAllowed: return "protocol_not_allowed"
        case .dnsFailure: return "dns_failure"
        case .connectionRefused: return "connection_refused"
        case .timeout: return "timeout"
        case .tls: return "tls_error"
        case .bodyTooLarge: return "body_too_large"
        case .connectionFailed: return "connection_failed"
        case .cancelled: return "cancelled"
        case .shutDown: return "client_shut_down"
        case .other: return "transport_error"
        }
    }

    public var description: String {
        let what: String
        switch code {
        case .invalidURL: what = "invalid URL"
        case .invalidRequest: what = "invalid request"
        case .protocolNotAllowed: what = "only http and https URLs are allowed"
        case .dnsFailure: what = "host name did not resolve"
        case .connectionRefused: what = "connection refused"
        case .timeout: what = "timed out"
        case .tls: what = "TLS failure"
        case .bodyTooLarge(let limit): what = "response body larger than \(limit) bytes"
        case .connectionFailed: what = "connection failed"
        case .cancelled: what = "request cancelled"
        case .shutDown: what = "HTTP client shut down"
        case .other: what = "transfer failed"
        }
        return detail.isEmpty ? "\(url): \(what)" : "\(url): \(what) (\(detail))"
    }
}
