import Foundation
import RelayCore
import Testing

@Suite struct DurationTextTests {
    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)), ("5s", .seconds(5)), ("10m", .seconds(600)), ("24h", .seconds(86_400)),
        ("30d", .seconds(30 * 86_400)), ("1h30m", .seconds(5400)), ("1.5s", .milliseconds(1500)), ("0s", .zero),
    ])
    func parsesConfigDurations(_ text: String, _ expected: Duration) {
        #expect(DurationText.parse(text) == expected)
    }

    @Test(arguments: ["", "5", "s", "5 s", "-5s", "5sec", "1e3s", "5s ", "ms"])
    func rejectsMalformedDurations(_ text: String) {
        #expect(DurationText.parse(text) == nil)
    }

    @Test func formatsInTheLargestExactUnit() {
        #expect(DurationText.format(.seconds(60)) == "1m")
        #expect(DurationText.format(.seconds(72 * 3600)) == "3d")
        #expect(DurationText.format(.milliseconds(1500)) == "1500ms")
        #expect(DurationText.format(.zero) == "0ms")
    }
}

@Suite struct TimestampTests {
    @Test(arguments: [
        ("2019-11-18T13:30:11.444Z", Int64(1_574_083_811_444)),
        ("2019-11-18T13:30:11Z", 1_574_083_811_000),
        ("2019-11-18T13:30:11.4Z", 1_574_083_811_400),
        ("2019-11-18T13:30:11.444999Z", 1_574_083_811_444),
        ("2019-11-18T14:30:11.444+01:00", 1_574_083_811_444),
        ("2019-11-18T08:30:11.444-0500", 1_574_083_811_444),
        ("2019-11-18 13:30:11.444", 1_574_083_811_444),
        ("2019-11-18", 1_574_035_200_000),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.999Z", -1),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000),
    ])
    func parsesISO8601Variants(_ text: String, _ milliseconds: Int64) {
        #expect(Timestamp(iso8601: text)?.millisecondsSinceEpoch == milliseconds)
    }

    @Test(arguments: ["", "2019-13-01", "2023-02-29", "2019-11-18T25:00:00Z", "2019-11-18T13:30:11Zjunk", "18/11/2019", "2019-11-18T13"])
    func rejectsNonTimes(_ text: String) {
        #expect(Timestamp(iso8601: text) == nil)
    }

    @Test func formatsAsTheAPIDoesAndRoundTrips() {
        let time = Timestamp(millisecondsSinceEpoch: 1_574_083_811_444)
        #expect(time.iso8601 == "2019-11-18T13:30:11.444Z")
        for ms in [Int64(-86_400_001), 0, 951_782_400_000, 4_102_444_800_123] {
            let t = Timestamp(millisecondsSinceEpoch: ms)
            #expect(Timestamp(iso8601: t.iso8601) == t)
        }
    }
}

@Suite struct ConfigLoaderTests {
    static let minimal = #"""
        {"sources": [{"name": "acme", "clientId": "acme", "accountId": "acme", "brandId": "ACME", "authToken": {"env": "TOKEN"}}],
         "subscriptions": [{"name": "all-events", "webhook": {"url": "http://127.0.0.1:9/hook",
            "headers": {"X-Key": {"file": "%FILE%"}}, "secret": {"credential": "hook-secret"}}}]}
        """#

    @Test func resolvesEverySecretKindAndFillsDefaults() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("relay-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let headerFile = directory.appendingPathComponent("x-key")
        try "header-from-file\n".write(to: headerFile, atomically: true, encoding: .utf8)
        try "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".write(
            to: directory.appendingPathComponent("hook-secret"), atomically: true, encoding: .utf8)
        let text = Self.minimal.replacingOccurrences(of: "%FILE%", with: headerFile.path)
        let config = try ConfigLoader.validate(
            Array(text.utf8), file: "t.json",
            environment: ConfigEnvironment(variables: ["TOKEN": "token-from-env", "CREDENTIALS_DIRECTORY": directory.path]))

        let source = try #require(config.sources.first)
        #expect(source.authToken.exposedValue == "token-from-env")
        #expect(source.authToken.origin == .environment("TOKEN"))
        #expect(source.eventsURL == "https://tracking.intilery.com/track/acme/acme/ACME/v1/events")
        #expect(source.pollInterval == .seconds(5))
        #expect(source.lookback == .seconds(60))
        #expect(source.pageSize == 100)
        #expect(source.rateLimit == .intileryAPI)
        #expect(source.startFrom == .now)

        let subscription = try #require(config.subscriptions.first)
        #expect(subscription.source == "acme")
        #expect(subscription.webhook.headers.first?.value.exposedValue == "header-from-file")
        #expect(subscription.webhook.signingKey?.exposedKey.count == 24)
        #expect(subscription.webhook.signingKey?.origin == .credential("hook-secret"))
        #expect(subscription.webhook.retry == RetryPolicy())
        #expect(subscription.webhook.concurrency == 4)
        #expect(subscription.webhook.timeout == .seconds(15))
        #expect(config.shutdownGrace == .seconds(10))
        #expect(config.metrics.listen == ListenAddress(host: "127.0.0.1", port: 9464))
        #expect(config.deadLetters.retention == .seconds(30 * 86_400))
    }

    @Test func secretsNeverPrint() throws {
        let secret = Secret("hunter2", origin: .literal)
        #expect("\(secret)" == "<set>")
        #expect(String(reflecting: secret) == "<set>")
        #expect(!"\([secret])".contains("hunter2"))
    }

    @Test func secretValuesNeverAppearInProblems() throws {
        let text = #"""
            {"sources": [{"name": "acme", "clientId": "a", "accountId": "a", "brandId": "A", "authToken": "tok\nen-VALUE"}],
             "subscriptions": [{"name": "h", "webhook": {"url": "https://e.com/", "secret": "whsec_SECRETVALUE",
               "headers": {"X-A": "HEADER\r\nVALUE"}}}]}
            """#
        #expect {
            _ = try ConfigLoader.validate(Array(text.utf8), file: "c.json", environment: ConfigEnvironment(variables: [:]))
        } throws: { error in
            let lines = (error as? ConfigError)?.lines ?? []
            return lines.count == 3 && !lines.joined().contains("VALUE")
        }
    }

    @Test func filtersBecomeATree() throws {
        let text = #"""
            {"sources": [{"name": "acme", "clientId": "a", "accountId": "a", "brandId": "A", "authToken": "t"}],
             "subscriptions": [{"name": "h", "webhook": {"url": "https://e.com/"},
               "where": {"any": [{"path": "properties.items.0.sku", "op": "prefix", "value": "AB"},
                                 {"not": {"path": "userId", "op": "exists"}}]}}]}
            """#
        let config = try ConfigLoader.validate(Array(text.utf8), file: "c.json", environment: ConfigEnvironment(variables: [:]))
        let filter = try #require(config.subscriptions.first?.filter)
        guard case .any(let parts) = filter, parts.count == 2,
            case .condition(let path, .prefix, .string("AB")) = parts[0],
            case .not(.condition(let existsPath, .exists, .bool(true))) = parts[1]
        else {
            Issue.record("unexpected filter \(filter)")
            return
        }
        #expect(path.segments == ["properties", "items", "0", "sku"])
        #expect(existsPath.description == "userId")
    }

    @Test(arguments: [
        ("127.0.0.1:9464", "127.0.0.1", 9464), ("[::1]:80", "::1", 80), ("0.0.0.0:0", "0.0.0.0", 0),
        ("localhost:65535", "localhost", 65535),
        // Every interface, as Prometheus exporters read ":9100".
        (":9464", "::", 9464),
    ])
    func parsesListenAddresses(_ text: String, _ host: String, _ port: Int) {
        #expect(ListenAddress(parsing: text) == ListenAddress(host: host, port: port))
    }

    @Test(arguments: ["localhost", ":", ":http", "host:+80", "host:99999", "::1:80", "[::1]80", "a b:1"])
    func rejectsBadListenAddresses(_ text: String) {
        #expect(ListenAddress(parsing: text) == nil)
    }
}
