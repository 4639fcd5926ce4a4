import Synchronization
/// One request the receiver got, and what it answered.
public struct ReceivedWebhook: Sendable {
    /// The request path, such as `/hooks/email-clicks`.
    public var path: String
    /// The method, normally `POST`.
    public var method: String
    /// Header fields as received.
    public var headers: [(name: String, value: String)]
    /// The body, empty when the receiver was told not to keep bodies.
    public var body: [UInt8]
    /// Receipt time, milliseconds since the epoch on the receiver's clock.
    public var receivedAt: Int64
    /// Which connection carried it, from 1.
    public var connectionNumber: Int
    /// The status answered; nil when the receiver never answered or closed the connection.
    public var answeredStatus: Int?
    /// Whether the Standard Webhooks signature verified; nil when no secret is set for the path.
    public var signatureValid: Bool?

    /// The `webhook-id` header.
    public var webhookID: String? { header("webhook-id") }

    /// The first value of a header, compared without regard to case.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
}

/// How the receiver answers a request on a path.
public enum ReceiverReply: Sendable, Equatable {
    /// This status, headers and body, after a delay.
    case status(Int, headers: [String: String] = [:], body: String = "", after: Duration = .zero)
    /// This status once `gate` opens: a test holds one request out until it has done what must happen meanwhile,
    /// however slow the machine.
    case statusWhenOpened(Int, gate: ReceiverGate)
    /// Keeps the connection open and never answers.
    case neverAnswer
    /// Closes the connection without answering.
    case close

    /// `200 OK`.
    public static let ok = ReceiverReply.status(200)

    /// `429` with a `Retry-After` of this many seconds, or none.
    public static func tooManyRequests(retryAfter seconds: Int?) -> ReceiverReply {
        .status(429, headers: seconds.map { ["retry-after": String($0)] } ?? [:])
    }

    /// A redirect to `location`.
    public static func redirect(_ status: Int = 302, to location: String) -> ReceiverReply {
        .status(status, headers: ["location": location])
    }
}

/// Holds the answers given with ``ReceiverReply/statusWhenOpened(_:gate:)`` until ``open()``; opened, it holds none.
public final class ReceiverGate: Sendable, Equatable {
    private struct State {
        var opened = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    /// A closed gate.
    public init() {}

    /// Lets every held answer go, and every later one at once.
    public func open() {
        let waiters = state.withLock { state in
            state.opened = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the gate is open.
    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let openNow = state.withLock { state -> Bool in
                if state.opened { return true }
                state.waiters.append(continuation)
                return false
            }
            if openNow { continuation.resume() }
        }
    }

    public static func == (lhs: ReceiverGate, rhs: ReceiverGate) -> Bool { lhs === rhs }
}
