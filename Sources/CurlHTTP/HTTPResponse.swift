/// A completed HTTP exchange: any status, 3xx included, since redirects are never followed.
public struct HTTPResponse: Sendable {
    /// The status code of the final response.
    public var status: Int
    /// Header fields of the final response, in order.
    public var headers: HTTPHeaders
    /// The body, or its first bytes when ``bodyTruncated`` is set.
    public var body: [UInt8]
    /// Set when a ``ResponseBodyLimit/keepFirst(_:)`` limit cut the body short.
    public var bodyTruncated: Bool
    /// Where the time went.
    public var timings: HTTPTimings
    /// Whether this exchange opened a new connection (false when an idle one was reused).
    public var openedNewConnection: Bool
    /// The HTTP version spoken, such as `1.1` or `2`.
    public var httpVersion: String
}

/// Durations measured from the start of the transfer, as libcurl reports them.
public struct HTTPTimings: Sendable, Equatable {
    /// Until the name was resolved.
    public var nameLookup: Duration
    /// Until the TCP connection was up.
    public var connect: Duration
    /// Until the TLS handshake was done (zero for plain HTTP).
    public var tlsHandshake: Duration
    /// Until the first response byte arrived.
    public var firstByte: Duration
    /// Until the transfer completed.
    public var total: Duration
}
