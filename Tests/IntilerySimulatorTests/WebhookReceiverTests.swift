import Foundation
import CurlHTTP
import IntilerySimulator
import Synchronization
import Testing

/// Runs `body` with a receiver on a manual clock at the Standard Webhooks test vector's time.
func withReceiver<T>(_ body: (WebhookReceiver, CurlHTTPClient, SimulatorTime) async throws -> T) async throws -> T {
    let time = SimulatorTime.manual(at: 1_614_265_330_000)
    let receiver = try await WebhookReceiver.start(time: time)
    let client = CurlHTTPClient()
    do {
        let result = try await body(receiver, client, time)
        await client.shutdown()
        try await receiver.shutdown()
        return result
    } catch {
        await client.shutdown()
        try await receiver.shutdown()
        throw error
    }
}

func post(_ url: String, _ body: String, headers: HTTPHeaders = [:], timeout: Duration = .seconds(10)) -> HTTPRequest {
    var all = headers
    all.add(name: "content-type", value: "application/json")
    return HTTPRequest(method: "POST", url: url, headers: all, body: Array(body.utf8), timeout: timeout)
}

@Suite struct WebhookReceiverTests {
    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    @Test func signatureMatchesTheStandardWebhooksTestVector() {
        let key = [UInt8](Data(base64Encoded: "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")!)
        let signature = StandardWebhooksVerifier.signature(
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330, body: Array(#"{"test": 2432232314}"#.utf8), key: key)
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    }

    @Test func recordsRequestsCountsIDsAndVerifiesSignatures() async throws {
        try await withReceiver { receiver, client, _ in
            receiver.verifySignatures(on: "/signed", secret: Self.secret)
            let body = #"{"test": 2432232314}"#
            let good: HTTPHeaders = [
                "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
                "webhook-signature": "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ]
            #expect(try await client.execute(post(receiver.url("/signed"), body, headers: good)).status == 200)
            var tampered = good
            tampered.replaceOrAdd(name: "webhook-signature", value: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
            _ = try await client.execute(post(receiver.url("/signed"), body + " ", headers: tampered))
            var stale = good
            stale.replaceOrAdd(name: "webhook-timestamp", value: "1614264000")
            _ = try await client.execute(post(receiver.url("/signed"), body, headers: stale))
            _ = try await client.execute(post(receiver.url("/plain"), "[]", headers: ["webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek"]))

            let record = receiver.record
            #expect(record.requests.map(\.signatureValid) == [true, false, false, nil])
            #expect(record.countsByWebhookID["msg_p5jXN8AQM9LWM0D4loKWxJek"] == 4)
            #expect(record.requests(to: "/signed").first?.body == Array(body.utf8))
            #expect(record.requests.first?.header("content-type") == "application/json")
            #expect(record.countsByPath == ["/signed": 3, "/plain": 1])
        }
    }

    @Test func scriptedStatusSequencesThenDefault() async throws {
        try await withReceiver { receiver, client, _ in
            receiver.script("/flaky", [.status(500), .status(500)], then: .ok)
            var statuses: [Int] = []
            for _ in 0..<4 { statuses.append(try await client.execute(post(receiver.url("/flaky"), "{}")).status) }
            #expect(statuses == [500, 500, 200, 200])
            #expect(receiver.record.successesByPath["/flaky"] == 2)
        }
    }

    @Test func anAnswerHeldByAGateGoesWhenItOpens() async throws {
        try await withReceiver { receiver, client, _ in
            let gate = ReceiverGate()
            receiver.script("/held", [.statusWhenOpened(202, gate: gate)])
            let answered = Mutex(false)
            let held = Task {
                defer { answered.withLock { $0 = true } }
                return try await client.execute(post(receiver.url("/held"), "{}")).status
            }
            #expect(await receiver.waitUntil { $0.countsByPath["/held"] == 1 })
            // Received and recorded, not answered; other requests are, meanwhile.
            #expect(try await client.execute(post(receiver.url("/other"), "{}")).status == 200)
            #expect(!answered.withLock { $0 })
            gate.open()
            let status = try await held.value
            #expect(status == 202)
        }
    }

    @Test func answersWith429RetryAfterGoneAndRedirects() async throws {
        try await withReceiver { receiver, client, _ in
            receiver.script("/busy", [.tooManyRequests(retryAfter: 7), .tooManyRequests(retryAfter: nil)])
            let first = try await client.execute(post(receiver.url("/busy"), "{}"))
            #expect(first.status == 429 && first.headers["retry-after"] == "7")
            #expect(try await client.execute(post(receiver.url("/busy"), "{}")).headers["retry-after"] == nil)
            receiver.script("/gone", [], then: .status(410))
            #expect(try await client.execute(post(receiver.url("/gone"), "{}")).status == 410)
            receiver.script("/moved", [], then: .redirect(to: "/elsewhere"))
            let moved = try await client.execute(post(receiver.url("/moved"), "{}"))
            #expect(moved.status == 302 && moved.headers["location"] == "/elsewhere")
            #expect(receiver.record.countsByPath["/elsewhere"] == nil)
        }
    }

    @Test func neverAnsweringAndSlowPaths() async throws {
        try await withReceiver { receiver, client, _ in
            receiver.script("/hang", [], then: .neverAnswer)
            await #expect(throws: CurlHTTPError.self) {
                _ = try await client.execute(post(receiver.url("/hang"), "{}", timeout: .milliseconds(200)))
            }
            receiver.script("/slow", [], then: .status(200, after: .milliseconds(120)))
            let slow = try await client.execute(post(receiver.url("/slow"), "{}"))
            #expect(slow.timings.firstByte >= .milliseconds(120))
            #expect(receiver.record.requests(to: "/hang").first?.answeredStatus == nil)
        }
    }

    @Test func waitUntilReturnsWhenThePredicateHoldsAndTimesOutOtherwise() async throws {
        try await withReceiver { receiver, client, _ in
            async let arrived = receiver.waitUntil { $0.countsByPath["/w", default: 0] >= 3 }
            for _ in 0..<3 { _ = try await client.execute(post(receiver.url("/w"), "{}")) }
            #expect(await arrived)
            #expect(await receiver.waitUntil(timeout: .milliseconds(50)) { $0.countsByPath["/never", default: 0] > 0 } == false)
        }
    }
}
