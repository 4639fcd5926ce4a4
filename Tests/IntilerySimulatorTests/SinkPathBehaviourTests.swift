import CurlHTTP
import IntilerySimulator
import Testing

/// `simulate --sink-path` and `--verify-secret`: what a person trying retries and dead letters by hand gets.
@Suite struct SinkPathBehaviourTests {
    @Test func parsesEachDocumentedForm() throws {
        #expect(try SinkPathBehaviour(parsing: "/bad=400") == SinkPathBehaviour(path: "/bad", reply: .status(400)))
        #expect(try SinkPathBehaviour(parsing: "/slow=delay:3s") == SinkPathBehaviour(path: "/slow", reply: .status(200, after: .seconds(3))))
        #expect(
            try SinkPathBehaviour(parsing: "/busy=429:retry-after=1")
                == SinkPathBehaviour(path: "/busy", reply: .status(429, headers: ["retry-after": "1"])))
        #expect(
            try SinkPathBehaviour(parsing: "/flaky=500:p=0.3") == SinkPathBehaviour(path: "/flaky", reply: .status(500), probability: 0.3))
        #expect(try SinkPathBehaviour(parsing: "/down=refuse") == SinkPathBehaviour(path: "/down", reply: .close))
        #expect(
            try SinkPathBehaviour(parsing: "/late=503:delay=250ms")
                == SinkPathBehaviour(path: "/late", reply: .status(503, after: .milliseconds(250))))
    }

    @Test func aBadFormNamesThePartNotUnderstood() {
        for (text, part) in [("bad=400", "bad=400"), ("/x=4000", "4000"), ("/x=500:p=2", "p=2"), ("/x=delay:soon", "delay:soon"),
                             ("/x=429:retry-after=-1", "retry-after=-1"), ("/x=refuse:p=1", "p=1"), ("/x=200:colour=red", "colour=red")] {
            #expect(throws: SinkPathBehaviourError.self, "\(text)") { try SinkPathBehaviour(parsing: text) }
            do {
                _ = try SinkPathBehaviour(parsing: text)
            } catch {
                #expect(error.description.contains("(at \"\(part)\")"), "\(error.description)")
            }
        }
    }

    @Test func theReceiverAnswersEachPathAsConfiguredAndOthers200() async throws {
        try await withReceiver { receiver, client, _ in
            for text in ["/bad=400", "/busy=429:retry-after=1", "/down=refuse", "/never=500:p=0", "/always=503:p=1"] {
                try SinkPathBehaviour(parsing: text).apply(to: receiver)
            }
            #expect(try await client.execute(post(receiver.url("/bad"), "{}")).status == 400)
            #expect(try await client.execute(post(receiver.url("/bad"), "{}")).status == 400)
            let busy = try await client.execute(post(receiver.url("/busy"), "{}"))
            #expect(busy.status == 429 && busy.headers["retry-after"] == "1")
            await #expect(throws: CurlHTTPError.self) { _ = try await client.execute(post(receiver.url("/down"), "{}")) }
            #expect(try await client.execute(post(receiver.url("/elsewhere"), "{}")).status == 200)
            for _ in 0..<20 {
                #expect(try await client.execute(post(receiver.url("/never"), "{}")).status == 200)
                #expect(try await client.execute(post(receiver.url("/always"), "{}")).status == 503)
            }
        }
    }

    @Test func aFlakyPathFailsAboutItsShareOfRequests() async throws {
        try await withReceiver { receiver, client, _ in
            try SinkPathBehaviour(parsing: "/flaky=500:p=0.3").apply(to: receiver)
            var failures = 0
            for _ in 0..<400 where try await client.execute(post(receiver.url("/flaky"), "{}")).status == 500 { failures += 1 }
            // Binomial(400, 0.3): mean 120, standard deviation 9.2; these bounds are more than 5 deviations out.
            #expect((72...168).contains(failures), "\(failures) of 400")
        }
    }

    @Test func verifySecretAnswers401ToAMissingOrBadSignature() async throws {
        try await withReceiver { receiver, client, _ in
            #expect(receiver.requireSignatures(secret: WebhookReceiverTests.secret))
            let body = #"{"test": 2432232314}"#
            let good: HTTPHeaders = [
                "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
                "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ]
            #expect(try await client.execute(post(receiver.url("/any"), body, headers: good)).status == 200)
            let tampered = try await client.execute(post(receiver.url("/any"), body + " ", headers: good))
            #expect(tampered.status == 401)
            #expect(try await client.execute(post(receiver.url("/other"), body)).status == 401)
            #expect(receiver.record.requests.map(\.signatureValid) == [true, false, false])
            #expect(!receiver.requireSignatures(secret: "not-a-secret"))
        }
    }
}
