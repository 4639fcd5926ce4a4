/// One HTTP request for ``CurlHTTPClient``.
public struct HTTPRequest: Sendable, CustomStringConvertible {
    /// The request method, such as `GET` or `POST`.
    public var method: String
    /// An `http` or `https` URL; any other scheme is refused before I/O.
    public var url: String
    /// Header fields sent as given. Values never appear in `description` or errors.
    public var headers: HTTPHeaders
    /// The request body, sent with `Content-Length`; `nil` sends none.
    public var body: [UInt8]?
    /// How long establishing the connection (DNS, TCP, TLS) may take. Default 10 s.
    public var connectTimeout: Duration
    /// How long the whole exchange may take, connection included. Default 30 s.
    public var timeout: Duration
    /// What to do with a response body larger than a bound. Default: fail beyond 16 MiB.
    public var responseBodyLimit: ResponseBodyLimit

    /// Creates a request; see each property for its default.
    public init(
        method: String = "GET",
        url: String,
        headers: HTTPHeaders = HTTPHeaders(),
        body: [UInt8]? = nil,
        connectTimeout: Duration = .seconds(10),
        timeout: Duration = .seconds(30),
        responseBodyLimit: ResponseBodyLimit = .failBeyond(16 << 20)
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.connectTimeout = connectTimeout
        self.timeout = timeout
        self.responseBodyLimit = responseBodyLimit
    }

    public var description: String {
        "\(method) \(RedactedURL(url)) headers: \(headers) body: \(body?.count ?? 0) bytes"
    }
}

/// The bound on a response body, and what happens past it.
public enum ResponseBodyLimit: Sendable, Equatable {
    /// The request fails with ``CurlHTTPError/bodyTooLarge(url:limit:)`` when the body exceeds this many bytes.
    /// Suits the Events API, where a partial body is worthless.
    case failBeyond(Int)
    /// The response completes with its status and the first this-many bytes, marked truncated, and the rest
    /// is not read. Suits webhook replies, where only the status matters and a snippet is kept for operators.
    case keepFirst(Int)

    var bytes: Int {
        switch self {
        case .failBeyond(let n), .keepFirst(let n): return n
        }
    }
}

/// A URL reduced to scheme, host and port: webhook URLs are often capabilities (a Zapier catch hook's path
/// is its secret), so errors and logs name only where a request went, never the path or query.
public struct RedactedURL: Sendable, CustomStringConvertible {
    public let description: String

    /// Reduces `url` to `scheme://host[:port]`.
    public init(_ url: String) {
        guard let schemeEnd = url.range(of: "://") else {
            description = "<invalid URL>"
            return
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        let rest = url[schemeEnd.upperBound...]
        var authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        if let at = authority.lastIndex(of: "@") {
            authority = authority[authority.index(after: at)...]
        }
        description = "\(scheme)://\(authority)"
    }
}
