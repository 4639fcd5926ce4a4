/// What the server does with a request: answer it, or misbehave in one of the ways tests need.
public enum HTTPServerReply: Sendable {
    /// Answers with this status, headers and body, after an optional delay.
    case respond(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = [], after: Duration = .zero)
    /// Sends this status and headers with a `Content-Length` for the whole body, then only `sentBytes` of it, then
    /// closes the connection: a truncated response.
    case truncate(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8], sentBytes: Int)
    /// Keeps the connection open and never answers.
    case neverRespond
    /// Closes the connection without answering.
    case close
    /// The reply an async computation makes (a read from a store, say), carried out when it is ready.
    case later(@Sendable () async -> HTTPServerReply)

    /// A `200` with a JSON body.
    public static func json(_ body: [UInt8], status: Int = 200) -> HTTPServerReply {
        .respond(status: status, headers: [("content-type", "application/json")], body: body)
    }

    /// A plain-text answer, for errors.
    public static func text(_ text: String, status: Int) -> HTTPServerReply {
        .respond(status: status, headers: [("content-type", "text/plain; charset=utf-8")], body: Array(text.utf8))
    }
}
