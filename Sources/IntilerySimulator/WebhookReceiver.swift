import Foundation
import HTTPServer
import Synchronization

/// A webhook receiver on loopback: records what arrives, checks Standard Webhooks signatures, and answers as each
/// path is told to (status sequences, 429 with Retry-After, redirects, latency, never answering).
///
/// Tests await what they expect with ``waitUntil(timeout:_:)`` rather than sleeping.
public final class WebhookReceiver: Sendable {
    /// What is known about the requests so far; the receiver keeps counts even when it keeps no bodies.
    public struct Record: Sendable {
        /// Every request, in arrival order (bodies only when kept).
        public var requests: [ReceivedWebhook] = []
        /// Requests per `webhook-id`, to count repeats.
        public var countsByWebhookID: [String: Int] = [:]
        /// Requests per path.
        public var countsByPath: [String: Int] = [:]
        /// Requests answered 2xx per path.
        public var successesByPath: [String: Int] = [:]

        /// Requests to one path.
        public func requests(to path: String) -> [ReceivedWebhook] { requests.filter { $0.path == path } }
    }

    private struct PathBehaviour {
        var script: [ReceiverReply] = []
        /// The n-th request carrying one `webhook-id` gets the n-th of these (after `script`), then `then`.
        var eachID: [ReceiverReply] = []
        var then: ReceiverReply = .ok
        var signingKey: [UInt8]?
        var outage: (until: Int64, reply: ReceiverReply)?
        /// Instead of `then`, with this probability.
        var flaky: (probability: Double, reply: ReceiverReply)?
    }

    private struct Waiter {
        let predicate: @Sendable (Record) -> Bool
        let continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var record = Record()
        var behaviours: [String: PathBehaviour] = [:]
        /// Verifies every path without a key of its own, and answers 401 to a bad signature.
        var requiredKey: [UInt8]?
        var keepBodies = true
        var keepRequests = true
        var waiters: [UUID: Waiter] = [:]
    }

    private let state = Mutex(State())
    /// In a struct, not bare: a closure that is the lock's value itself gains two thunks at each `withLock { $0 }`.
    private struct Observer {
        let call: @Sendable (ReceivedWebhook) -> Void
    }
    private let observer = Mutex<Observer?>(nil)
    private let time: SimulatorTime
    private let server: HTTPServer

    /// `http://127.0.0.1:port`.
    public var baseURL: String { server.baseURL }
    /// The port bound.
    public var port: Int { server.port }
    /// Connections accepted so far.
    public var acceptedConnections: Int { server.acceptedConnections }

    private init(time: SimulatorTime, server: HTTPServer) {
        self.time = time
        self.server = server
    }

    /// Starts listening on `host:port` (0: any free port).
    public static func start(host: String = "127.0.0.1", port: Int = 0, time: SimulatorTime = .system(), threads: Int = 1)
        async throws -> WebhookReceiver
    {
        let box = ReceiverBox()
        let server = try await HTTPServer.start(
            HTTPServer.Configuration(host: host, port: port, maxRequestBodyBytes: 16 << 20, threads: threads)
        ) { request in box.handle(request) }
        let receiver = WebhookReceiver(time: time, server: server)
        box.receiver.withLock { $0 = receiver }
        return receiver
    }

    /// Stops the server; waiting tests are released with `false`.
    public func shutdown() async throws {
        let waiters = state.withLock { state in
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.continuation.resume(returning: false) }
        try await server.shutdown()
    }

    /// The URL of a path on this receiver.
    public func url(_ path: String) -> String { baseURL + (path.hasPrefix("/") ? path : "/" + path) }

    /// Answers the next requests on `path` with `replies` in turn, then with `then` for good.
    public func script(_ path: String, _ replies: [ReceiverReply], then: ReceiverReply = .ok) {
        state.withLock { state in
            state.behaviours[path, default: PathBehaviour()].script = replies
            state.behaviours[path, default: PathBehaviour()].then = then
        }
    }

    /// Answers the first requests of each `webhook-id` on `path` with `replies` in turn, then with `then`: a
    /// receiver that throttles every event's first attempts, as a rate-limited catch hook does.
    public func scriptEachID(_ path: String, _ replies: [ReceiverReply], then: ReceiverReply = .ok) {
        state.withLock { state in
            state.behaviours[path, default: PathBehaviour()].eachID = replies
            state.behaviours[path, default: PathBehaviour()].then = then
        }
    }

    /// Answers every request on `path` with `reply` until the receiver's clock reaches `until` (ms since the epoch):
    /// an outage measured in the test's time, not in requests.
    public func outage(_ path: String, until: Int64, reply: ReceiverReply = .status(503)) {
        state.withLock { $0.behaviours[path, default: PathBehaviour()].outage = (until, reply) }
    }

    /// Answers `reply` instead of the path's usual answer to a share (`probability`, 0 to 1) of requests on `path`.
    public func flaky(_ path: String, probability: Double, reply: ReceiverReply) {
        state.withLock { $0.behaviours[path, default: PathBehaviour()].flaky = (probability, reply) }
    }

    /// Verifies signatures on every path with a `whsec_` secret and answers 401 to a request whose signature is
    /// missing or wrong, as a receiver that checks them does. Nil when the secret is not of the `whsec_` form.
    @discardableResult
    public func requireSignatures(secret: String) -> Bool {
        guard secret.hasPrefix("whsec_"), let key = Data(base64Encoded: String(secret.dropFirst(6))), !key.isEmpty else { return false }
        state.withLock { $0.requiredKey = Array(key) }
        return true
    }

    /// Verifies signatures on `path` with a `whsec_` secret.
    public func verifySignatures(on path: String, secret: String) {
        let key = secret.hasPrefix("whsec_") ? Data(base64Encoded: String(secret.dropFirst(6))).map(Array.init) : nil
        state.withLock { $0.behaviours[path, default: PathBehaviour()].signingKey = key ?? [] }
    }

    /// Whether to keep bodies and the request list (benchmarks keep counts only).
    public func keep(bodies: Bool, requests: Bool = true) {
        state.withLock { state in
            state.keepBodies = bodies
            state.keepRequests = requests
        }
    }

    /// Calls `observer` with every request as it arrives (after it is recorded), for live views.
    public func observe(_ observer: @escaping @Sendable (ReceivedWebhook) -> Void) {
        self.observer.withLock { $0 = Observer(call: observer) }
    }

    /// A snapshot of what arrived.
    public var record: Record { state.withLock { $0.record } }

    /// Returns once `predicate` holds for the record (true), or after `timeout` (false).
    public func waitUntil(timeout: Duration = .seconds(30), _ predicate: @escaping @Sendable (Record) -> Bool) async -> Bool {
        let id = UUID()
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let satisfied = self.state.withLock { state -> Bool in
                        if predicate(state.record) { return true }
                        state.waiters[id] = Waiter(predicate: predicate, continuation: continuation)
                        return false
                    }
                    if satisfied { continuation.resume(returning: true) }
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                let waiter = self.state.withLock { $0.waiters.removeValue(forKey: id) }
                waiter?.continuation.resume(returning: false)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            if first { return true }
            // The timeout fired first; the waiter has been released with false.
            return await group.next() ?? false
        }
    }

    // MARK: - Handling

    fileprivate func handle(_ request: HTTPServerRequest) -> HTTPServerReply {
        let now = time.now
        let path = String(request.path)
        let (reply, ready, received) = state.withLock { state -> (ReceiverReply, [Waiter], ReceivedWebhook) in
            var behaviour = state.behaviours[path] ?? PathBehaviour()
            var reply: ReceiverReply
            if let outage = behaviour.outage, now < outage.until {
                reply = outage.reply
            } else if !behaviour.script.isEmpty {
                reply = behaviour.script.removeFirst()
            } else if let id = request.header("webhook-id"), case let seen = state.record.countsByWebhookID[id, default: 0],
                seen < behaviour.eachID.count
            {
                reply = behaviour.eachID[seen]
            } else if let flaky = behaviour.flaky, Double.random(in: 0..<1) < flaky.probability {
                reply = flaky.reply
            } else {
                reply = behaviour.then
            }
            state.behaviours[path] = behaviour
            let valid = (behaviour.signingKey ?? state.requiredKey).map { key in
                StandardWebhooksVerifier.verify(request: request, key: key, nowSeconds: now / 1000)
            }
            let unauthorized = state.requiredKey != nil && valid == false
            if unauthorized { reply = .status(401, body: "the webhook-signature does not verify with the receiver's secret\n") }
            var status: Int?
            if case .status(let code, _, _, _) = reply { status = code }
            if case .statusWhenOpened(let code, _) = reply { status = code }
            let received = ReceivedWebhook(
                path: path, method: request.method, headers: request.headers,
                body: state.keepBodies ? request.body : [], receivedAt: now,
                connectionNumber: request.connectionNumber, answeredStatus: status, signatureValid: valid)
            if state.keepRequests { state.record.requests.append(received) }
            if let id = received.webhookID { state.record.countsByWebhookID[id, default: 0] += 1 }
            state.record.countsByPath[path, default: 0] += 1
            if let status, (200..<300).contains(status) { state.record.successesByPath[path, default: 0] += 1 }
            let record = state.record
            var ready: [Waiter] = []
            for (id, waiter) in state.waiters where waiter.predicate(record) {
                ready.append(waiter)
                state.waiters[id] = nil
            }
            return (reply, ready, received)
        }
        for waiter in ready { waiter.continuation.resume(returning: true) }
        if let observer = observer.withLock({ $0 }) {
            var seen = received
            if seen.body.isEmpty { seen.body = request.body }
            observer.call(seen)
        }
        switch reply {
        case .status(let code, let headers, let body, let delay):
            return .respond(
                status: code, headers: headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, body: Array(body.utf8),
                after: delay)
        case .statusWhenOpened(let code, let gate):
            return .later {
                await gate.wait()
                return .respond(status: code)
            }
        case .neverAnswer:
            return .neverRespond
        case .close:
            return .close
        }
    }
}

private final class ReceiverBox: Sendable {
    let receiver = Mutex<WebhookReceiver?>(nil)

    func handle(_ request: HTTPServerRequest) -> HTTPServerReply {
        guard let receiver = receiver.withLock({ $0 }) else { return .text("starting", status: 503) }
        return receiver.handle(request)
    }
}
