import CurlHTTP
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import HTTPServer
import Testing

/// Runs `body` with a started client and server, and stops both whatever happens.
func withClientAndServer<T>(
    _ configuration: HTTPServer.Configuration = .init(),
    handler: @escaping HTTPServer.Handler,
    _ body: (CurlHTTPClient, HTTPServer) async throws -> T
) async throws -> T {
    let server = try await HTTPServer.start(configuration, handler: handler)
    let client = CurlHTTPClient()
    do {
        let result = try await body(client, server)
        await client.shutdown()
        try await server.shutdown()
        return result
    } catch {
        await client.shutdown()
        try await server.shutdown()
        throw error
    }
}

/// Expects `body` to throw a ``CurlHTTPError`` of the same kind as `expected`, and returns it.
@discardableResult
func expectCurlError(
    _ expected: CurlHTTPError, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> Void
) async -> CurlHTTPError? {
    do {
        try await body()
        Issue.record("expected \(expected.shortDescription), got a response", sourceLocation: sourceLocation)
        return nil
    } catch let error as CurlHTTPError {
        #expect(error.isSameKind(as: expected), "got \(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

@Suite struct CurlHTTPClientTests {
    @Test func sequentialRequestsReuseOneConnection() async throws {
        try await withClientAndServer(handler: { request in .json(Array("{\"n\":\"\(request.uri)\"}".utf8)) }) {
            client, server in
            var reused = 0
            for n in 0..<1000 {
                let response = try await client.execute(HTTPRequest(url: "\(server.baseURL)/r/\(n)"))
                #expect(response.status == 200)
                #expect(String(decoding: response.body, as: UTF8.self) == "{\"n\":\"/r/\(n)\"}")
                if !response.openedNewConnection { reused += 1 }
            }
            #expect(server.acceptedConnections <= 2)
            #expect(reused >= 998)
        }
    }

    @Test func twoHundredConcurrentRequestsAllComplete() async throws {
        try await withClientAndServer(handler: { request in .respond(status: 200, body: Array(request.uri.utf8)) }) {
            client, server in
            let bodies = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for n in 0..<200 {
                    group.addTask {
                        let response = try await client.execute(HTTPRequest(url: "\(server.baseURL)/c/\(n)"))
                        return (n, String(decoding: response.body, as: UTF8.self))
                    }
                }
                var bodies: [Int: String] = [:]
                for try await (n, body) in group { bodies[n] = body }
                return bodies
            }
            #expect(bodies.count == 200)
            #expect(bodies.allSatisfy { $0.value == "/c/\($0.key)" })
            #expect(server.requestsHandled == 200)
        }
    }

    @Test func serverThatNeverAnswersTripsTheTimeout() async throws {
        try await withClientAndServer(handler: { _ in .neverRespond }) { client, server in
            let started = ContinuousClock.now
            await expectCurlError(.timeout(url: "")) {
                _ = try await client.execute(HTTPRequest(url: "\(server.baseURL)/hang", timeout: .milliseconds(300)))
            }
            // A bound on noticing, not on speed: well under the driver's 60 s idle poll, which is what a timeout
            // left to the poll would take. It is loose because `make test` runs every suite at once on two cores,
            // where resuming the test after the failure can wait for the cooperative pool (13 s seen in CI).
            #expect(ContinuousClock.now - started < .seconds(30))
        }
    }

    @Test func redirectIsReturnedAndNotFollowed() async throws {
        try await withClientAndServer(handler: { request in
            request.path == "/from"
                ? .respond(status: 302, headers: [("location", "/to")]) : .text("followed", status: 200)
        }) { client, server in
            let response = try await client.execute(HTTPRequest(url: "\(server.baseURL)/from"))
            #expect(response.status == 302)
            #expect(response.headers["Location"] == "/to")
            #expect(server.requestsHandled == 1)
        }
    }

    @Test(arguments: ["file:///etc/passwd", "gopher://127.0.0.1:%PORT%/", "ftp://127.0.0.1:%PORT%/x", "dict://127.0.0.1:%PORT%/"])
    func nonHTTPSchemesAreRefusedBeforeAnyIO(_ template: String) async throws {
        try await withClientAndServer(handler: { _ in .text("should not be reached", status: 200) }) { client, server in
            let url = template.replacingOccurrences(of: "%PORT%", with: String(server.port))
            await expectCurlError(.protocolNotAllowed("")) {
                _ = try await client.execute(HTTPRequest(url: url))
            }
            #expect(server.acceptedConnections == 0)
        }
    }

    @Test func bodyOverTheLimitFailsWithTypedError() async throws {
        let big = [UInt8](repeating: UInt8(ascii: "x"), count: 5000)
        try await withClientAndServer(handler: { _ in .respond(status: 200, body: big) }) { client, server in
            let error = await expectCurlError(.bodyTooLarge(url: "", limit: 0)) {
                _ = try await client.execute(HTTPRequest(url: "\(server.baseURL)/big", responseBodyLimit: .failBeyond(4096)))
            }
            #expect(error?.description.contains("4096") == true)
            let fits = try await client.execute(HTTPRequest(url: "\(server.baseURL)/big", responseBodyLimit: .failBeyond(5000)))
            #expect(fits.body.count == 5000)
        }
    }

    @Test func keepFirstLimitKeepsStatusAndASnippet() async throws {
        let big = [UInt8](repeating: UInt8(ascii: "y"), count: 200_000)
        try await withClientAndServer(handler: { _ in .respond(status: 503, body: big) }) { client, server in
            let response = try await client.execute(
                HTTPRequest(url: "\(server.baseURL)/reply", responseBodyLimit: .keepFirst(65_536)))
            #expect(response.status == 503)
            #expect(response.body.count == 65_536)
            #expect(response.bodyTruncated)
            let small = try await client.execute(HTTPRequest(url: "\(server.baseURL)/reply", responseBodyLimit: .keepFirst(300_000)))
            #expect(!small.bodyTruncated)
            #expect(small.body.count == 200_000)
        }
    }

    @Test func cancellingTheTaskEndsTheTransferPromptly() async throws {
        let (arrivals, arrived) = AsyncStream.makeStream(of: Void.self)
        try await withClientAndServer(handler: { _ in
            arrived.yield()
            return .neverRespond
        }) { client, server in
            let task = Task {
                try await client.execute(HTTPRequest(url: "\(server.baseURL)/slow", timeout: .seconds(60)))
            }
            var iterator = arrivals.makeAsyncIterator()
            _ = await iterator.next()
            let cancelledAt = ContinuousClock.now
            task.cancel()
            await expectCurlError(.cancelled(url: "")) { _ = try await task.value }
            #expect(ContinuousClock.now - cancelledAt < .seconds(5))
        }
    }

    @Test func cancelBeforeTheRequestStartsNeverReachesTheServer() async throws {
        try await withClientAndServer(handler: { _ in .text("ok", status: 200) }) { client, server in
            let task = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await client.execute(HTTPRequest(url: "\(server.baseURL)/never"))
            }
            await expectCurlError(.cancelled(url: "")) { _ = try await task.value }
            #expect(server.requestsHandled == 0)
        }
    }

    @Test func postSendsBodyAndHeadersExactly() async throws {
        let (requests, received) = AsyncStream.makeStream(of: HTTPServerRequest.self)
        try await withClientAndServer(handler: { request in
            received.yield(request)
            return .respond(status: 204)
        }) { client, server in
            let payload = Array("{\"a\": [1, 2.50, \"é\"]}".utf8) + [UInt8](repeating: 32, count: 4000)
            let request = HTTPRequest(
                method: "POST", url: "\(server.baseURL)/hook",
                headers: [
                    "content-type": "application/json", "webhook-id": "sub:evt-1", "x-empty": "",
                    // Longer than a stack buffer is given for: the header line is built on the heap then.
                    "x-long": String(repeating: "0123456789", count: 800),
                ],
                body: payload)
            let response = try await client.execute(request)
            #expect(response.status == 204)
            var iterator = requests.makeAsyncIterator()
            let seen = try #require(await iterator.next())
            #expect(seen.method == "POST")
            #expect(seen.body == payload)
            #expect(seen.header("webhook-id") == "sub:evt-1")
            #expect(seen.header("x-empty") == "")
            #expect(seen.header("x-long") == String(repeating: "0123456789", count: 800))
            #expect(seen.header("expect") == nil)
        }
    }

    @Test func aReusedHandleCarriesNothingOfTheRequestBefore() async throws {
        let (requests, received) = AsyncStream.makeStream(of: HTTPServerRequest.self)
        try await withClientAndServer(handler: { request in
            received.yield(request)
            return .respond(status: 200)
        }) { client, server in
            var iterator = requests.makeAsyncIterator()
            // One at a time, so that each request takes the handle the one before gave back.
            for round in 0..<3 {
                let post = HTTPRequest(
                    method: "POST", url: "\(server.baseURL)/post/\(round)", headers: ["webhook-id": "sub:evt-\(round)"],
                    body: Array("{\"round\":\(round)}".utf8))
                #expect(try await client.execute(post).status == 200)
                let posted = try #require(await iterator.next())
                #expect(posted.method == "POST" && posted.header("webhook-id") == "sub:evt-\(round)")
                #expect(try await client.execute(HTTPRequest(url: "\(server.baseURL)/get/\(round)")).status == 200)
                let got = try #require(await iterator.next())
                #expect(got.method == "GET" && got.uri == "/get/\(round)")
                #expect(got.body.isEmpty)
                #expect(got.header("webhook-id") == nil)
            }
        }
    }

    @Test func descriptionsNeverShowHeaderValuesOrURLPaths() async throws {
        let request = HTTPRequest(
            method: "POST", url: "https://user:pw@hooks.example.com/hooks/catch/123/s3cr3tpath/?token=abc",
            headers: ["authorization": "Bearer TOPSECRET"])
        let text = "\(request)"
        #expect(!text.contains("TOPSECRET"))
        #expect(!text.contains("s3cr3tpath"))
        #expect(!text.contains("pw"))
        #expect(text.contains("https://hooks.example.com"))
        let error = CurlHTTPError.timeout(url: request.url, detail: "x")
        #expect(!error.description.contains("s3cr3tpath"))
    }

    @Test func headerWithLineBreakIsRefused() async throws {
        let client = CurlHTTPClient()
        await expectCurlError(.invalidRequest(url: "", detail: "")) {
            _ = try await client.execute(
                HTTPRequest(url: "http://127.0.0.1:1/", headers: ["x-a": "ok\r\nx-injected: 1"]))
        }
        for value in ["ok\nx-injected: 1", "ok\rx", "ok\u{2028}x", "ok\u{85}x"] {
            await expectCurlError(.invalidRequest(url: "", detail: "")) {
                _ = try await client.execute(HTTPRequest(url: "http://127.0.0.1:1/", headers: ["x-a": value]))
            }
        }
        await expectCurlError(.invalidRequest(url: "", detail: "")) {
            _ = try await client.execute(HTTPRequest(url: "http://127.0.0.1:1/", headers: ["x-a\n": "ok"]))
        }
        await client.shutdown()
    }

    @Test func refusedConnectionIsTyped() async throws {
        // A port bound but not listening refuses connections, and stays ours for the test: a port freed by a stopped
        // server could be taken by a test running beside this one, which then answered.
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(socket >= 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0 }
        }
        #expect(bound)
        let client = CurlHTTPClient()
        let url = "http://127.0.0.1:\(UInt16(bigEndian: address.sin_port))/"
        await expectCurlError(.connectionRefused(url: "")) { _ = try await client.execute(HTTPRequest(url: url)) }
        await client.shutdown()
    }

    @Test func truncatedResponseIsAConnectionFailure() async throws {
        _ = try await withClientAndServer(handler: { _ in
            .truncate(status: 200, body: Array(repeating: UInt8(ascii: "z"), count: 1000), sentBytes: 10)
        }) { client, server in
            await expectCurlError(.connectionFailed(url: "")) {
                _ = try await client.execute(HTTPRequest(url: "\(server.baseURL)/t"))
            }
        }
    }

    @Test func shutdownFailsRequestsStillRunning() async throws {
        let (arrivals, arrived) = AsyncStream.makeStream(of: Void.self)
        let server = try await HTTPServer.start(handler: { _ in
            arrived.yield()
            return .neverRespond
        })
        let client = CurlHTTPClient()
        let task = Task { try await client.execute(HTTPRequest(url: "\(server.baseURL)/x", timeout: .seconds(60))) }
        var iterator = arrivals.makeAsyncIterator()
        _ = await iterator.next()
        await client.shutdown()
        await expectCurlError(.shutDown(url: "")) { _ = try await task.value }
        await expectCurlError(.shutDown(url: "")) { _ = try await client.execute(HTTPRequest(url: server.baseURL)) }
        try await server.shutdown()
    }
}

@Suite struct HTTPHeadersTests {
    @Test func lookupIgnoresASCIICaseOnly() {
        let headers: HTTPHeaders = ["Retry-After": "5", "X-Ä": "1"]
        #expect(headers["retry-after"] == "5")
        #expect(headers["RETRY-AFTER"] == "5")
        #expect(headers["retry-aftet"] == nil)
        #expect(headers["retry-after "] == nil)
        #expect(headers["x-ä"] == nil)
        #expect(headers["X-Ä"] == "1")
        // '@' and '`' differ from each other only in bit 0x20, but are not letters.
        let odd: HTTPHeaders = ["a@": "x"]
        #expect(odd["a`"] == nil)
    }
}
