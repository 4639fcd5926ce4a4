import Foundation

/// A request as the server received it, body complete.
public struct HTTPServerRequest: Sendable {
    /// The method, such as `GET`.
    public var method: String
    /// The request target as sent: path and query.
    public var uri: String
    /// Header fields in the order received.
    public var headers: [(name: String, value: String)]
    /// The whole body.
    public var body: [UInt8]
    /// Which accepted connection carried it, counting from 1.
    public var connectionNumber: Int

    /// The path part of ``uri``, percent-encoding left as sent.
    public var path: Substring { uri.prefix { $0 != "?" } }

    /// The query items of ``uri``, percent-decoded; `+` is taken literally, as servers of JSON APIs do.
    public var queryItems: [(name: String, value: String)] {
        guard let question = uri.firstIndex(of: "?") else { return [] }
        return uri[uri.index(after: question)...].split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let rawValue = parts.count > 1 ? String(parts[1]) : ""
            return (name, rawValue.removingPercentEncoding ?? rawValue)
        }
    }

    /// The first value of a query parameter.
    public func query(_ name: String) -> String? {
        queryItems.first { $0.name == name }?.value
    }

    /// The first value of a header, compared without regard to case.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
}
