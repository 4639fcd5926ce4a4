import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A small HTTP/1.1 server on SwiftNIO: keep-alive, a synchronous handler per request, and counters of the
/// connections it accepted. The simulator, the test servers and the metrics endpoint are built on it.
///
/// It must be stopped with ``shutdown()``.
public final class HTTPServer: Sendable {
    /// Where to listen and what to accept.
    public struct Configuration: Sendable {
        /// The address to bind. Default `127.0.0.1`.
        public var host: String
        /// The port to bind, 0 for any free one. Default 0.
        public var port: Int
        /// Requests with a larger body are answered 413 and their connection closed. Default 1 MiB.
        public var maxRequestBodyBytes: Int
        /// Event-loop threads. Default 1.
        public var threads: Int

        /// Creates a configuration; see each property for its default.
        public init(host: String = "127.0.0.1", port: Int = 0, maxRequestBodyBytes: Int = 1 << 20, threads: Int = 1) {
            self.host = host
            self.port = port
            self.maxRequestBodyBytes = maxRequestBodyBytes
            self.threads = threads
        }
    }

    /// Answers one request; called on an event-loop thread, so it must not block.
    public typealias Handler = @Sendable (HTTPServerRequest) -> HTTPServerReply

    /// The port bound.
    public let port: Int
    /// `http://host:port`, for clients.
    public let baseURL: String
    private let counters: ConnectionCounters
    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel

    /// Connections accepted since start.
    public var acceptedConnections: Int { counters.accepted.load(ordering: .relaxed) }
    /// Connections open now.
    public var openConnections: Int { counters.open.load(ordering: .relaxed) }
    /// Requests answered or dropped since start.
    public var requestsHandled: Int { counters.requests.load(ordering: .relaxed) }

    private init(port: Int, host: String, counters: ConnectionCounters, group: MultiThreadedEventLoopGroup, channel: any Channel) {
        self.port = port
        self.baseURL = "http://\(host.contains(":") ? "[\(host)]" : host):\(port)"
        self.counters = counters
        self.group = group
        self.channel = channel
    }

    /// Binds and starts serving.
    public static func start(_ configuration: Configuration = Configuration(), handler: @escaping Handler) async throws
        -> HTTPServer
    {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.threads)
        let counters = ConnectionCounters()
        let maxBody = configuration.maxRequestBodyBytes
        do {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    let number = counters.accepted.wrappingAdd(1, ordering: .relaxed).newValue
                    counters.open.wrappingAdd(1, ordering: .relaxed)
                    channel.closeFuture.whenComplete { _ in counters.open.wrappingSubtract(1, ordering: .relaxed) }
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(
                            RequestHandler(connectionNumber: number, maxBody: maxBody, counters: counters, handler: handler)
                        )
                    }
                }
                .bind(host: configuration.host, port: configuration.port).get()
            let port = channel.localAddress?.port ?? configuration.port
            return HTTPServer(port: port, host: configuration.host, counters: counters, group: group, channel: channel)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Stops listening, closes every connection and stops the threads.
    public func shutdown() async throws {
        try? await channel.close()
        // A `.later` reply still being made must find its event loop running, or NIO complains on stderr: wait
        // for them, for a moment.
        let deadline = ContinuousClock.now + .seconds(2)
        while counters.laterReplies.load(ordering: .relaxed) > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        try await group.shutdownGracefully()
    }
}

final class ConnectionCounters: Sendable {
    let accepted = Atomic<Int>(0)
    let open = Atomic<Int>(0)
    let requests = Atomic<Int>(0)
    /// `.later` replies being made.
    let laterReplies = Atomic<Int>(0)
}

/// Collects one request at a time and carries out the handler's reply.
private final class RequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let connectionNumber: Int
    private let maxBody: Int
    private let counters: ConnectionCounters
    private let handler: HTTPServer.Handler
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var tooLarge = false

    init(connectionNumber: Int, maxBody: Int, counters: ConnectionCounters, handler: @escaping HTTPServer.Handler) {
        self.connectionNumber = connectionNumber
        self.maxBody = maxBody
        self.counters = counters
        self.handler = handler
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = nil
            tooLarge = false
        case .body(var chunk):
            guard !tooLarge else { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > maxBody {
                tooLarge = true
                body = nil
                return
            }
            if body == nil { body = chunk } else { body!.writeBuffer(&chunk) }
        case .end:
            guard let head else { return }
            self.head = nil
            counters.requests.wrappingAdd(1, ordering: .relaxed)
            if tooLarge {
                write(context: context, status: 413, headers: [], body: Array("request body too large\n".utf8), keepAlive: false)
                return
            }
            let request = HTTPServerRequest(
                method: head.method.rawValue,
                uri: head.uri,
                headers: head.headers.map { ($0.name, $0.value) },
                body: body.map { Array($0.readableBytesView) } ?? [],
                connectionNumber: connectionNumber
            )
            body = nil
            perform(handler(request), keepAlive: head.isKeepAlive, context: context)
        }
    }

    private func perform(_ reply: HTTPServerReply, keepAlive: Bool, context: ChannelHandlerContext) {
        switch reply {
        case .respond(let status, let headers, let body, let delay):
            if delay <= .zero {
                write(context: context, status: status, headers: headers, body: body, keepAlive: keepAlive)
            } else {
                let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
                let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.eventLoop.scheduleTask(in: .nanoseconds(delay.nanoseconds)) {
                    loopBoundSelf.value.write(
                        context: loopBoundContext.value, status: status, headers: headers, body: body, keepAlive: keepAlive)
                }
            }
        case .truncate(let status, let headers, let body, let sentBytes):
            var head = HTTPResponseHead(version: .http1_1, status: .init(statusCode: status))
            for field in headers { head.headers.add(name: field.name, value: field.value) }
            head.headers.replaceOrAdd(name: "content-length", value: String(body.count))
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            let buffer = context.channel.allocator.buffer(bytes: body.prefix(sentBytes))
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer)))).whenComplete { _ in
                channel.close(promise: nil)
            }
        case .neverRespond:
            break
        case .close:
            context.close(promise: nil)
        case .later(let produce):
            let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
            let eventLoop = context.eventLoop
            let counters = counters
            counters.laterReplies.wrappingAdd(1, ordering: .relaxed)
            Task {
                let reply = await produce()
                eventLoop.execute {
                    loopBoundSelf.value.perform(reply, keepAlive: keepAlive, context: loopBoundContext.value)
                }
                counters.laterReplies.wrappingSubtract(1, ordering: .relaxed)
            }
        }
    }

    private func write(
        context: ChannelHandlerContext, status: Int, headers: [(name: String, value: String)], body: [UInt8], keepAlive: Bool
    ) {
        guard context.channel.isActive else { return }
        var head = HTTPResponseHead(version: .http1_1, status: .init(statusCode: status))
        for field in headers { head.headers.add(name: field.name, value: field.value) }
        head.headers.replaceOrAdd(name: "content-length", value: String(body.count))
        if !keepAlive { head.headers.replaceOrAdd(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if !body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        let channel = context.channel
        if !keepAlive { done.whenComplete { _ in channel.close(promise: nil) } }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
