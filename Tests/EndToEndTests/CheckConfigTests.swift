import Foundation
import Testing

/// `check-config` through the real binary: every rule of docs/configuration.md, one broken file at a time.
@Suite struct CheckConfigTests {
    static let source = #"{"name": "acme", "clientId": "acme", "accountId": "acme", "brandId": "ACME", "authToken": "tok-1"}"#
    static let subscription = #"{"name": "hook", "webhook": {"url": "https://example.com/h"}}"#

    static func config(sources: String = "[\(source)]", subscriptions: String = "[\(subscription)]", extra: String = "") -> String {
        #"{"sources": \#(sources), "subscriptions": \#(subscriptions)\#(extra.isEmpty ? "" : ", " + extra)}"#
    }

    static func sourceWith(_ members: String) -> String {
        "[" + source.dropLast() + ", " + members + "}]"
    }

    static func webhookWith(_ members: String, subscriptionMembers: String = "") -> String {
        let extra = subscriptionMembers.isEmpty ? "" : subscriptionMembers + ", "
        return #"[{"name": "hook", \#(extra)"webhook": {"url": "https://example.com/h", \#(members)}}]"#
    }

    static func whereClause(_ filter: String) -> String {
        #"[{"name": "hook", "where": \#(filter), "webhook": {"url": "https://example.com/h"}}]"#
    }

    /// (file contents, the problem line expected after "FILE: ").
    static let invalidConfigs: [(String, String)] = [
        (#"{"sources": [}"#, "not valid JSON: line 1, column 14"),
        ("[]", "must be an object, not an array"),
        (config(extra: #""sourcez": []"#), #"sourcez: unknown key (did you mean "sources"?)"#),
        (#"{"subscriptions": [\#(subscription)]}"#, "sources: is required"),
        (config(sources: "[]"), "sources: must list at least one source"),
        (config(sources: "[\(source)]", subscriptions: "[]"), "subscriptions: must list at least one subscription"),
        (config(sources: #"[{"name": "Acme!", "clientId": "a", "accountId": "a", "brandId": "A", "authToken": "t"}]"#),
         "sources[0].name: must match [a-z0-9_-]+"),
        (config(sources: "[\(source), \(source)]", subscriptions: #"[{"name": "hook", "source": "acme", "webhook": {"url": "https://e.com/"}}]"#),
         #"sources[1].name: duplicate source name "acme" (first used at sources[0])"#),
        (config(sources: sourceWith(#""baseURL": "ftp://tracking.intilery.com""#)), "sources[0].baseURL: must be an http or https URL"),
        (config(sources: #"[{"name": "acme", "accountId": "a", "brandId": "A", "authToken": "t"}]"#), "sources[0].clientId: is required"),
        (config(sources: sourceWith(#""pageSize": 101"#)), "sources[0].pageSize: must be an integer from 1 to 100"),
        (config(sources: sourceWith(#""pageSize": "100""#)), "sources[0].pageSize: must be an integer from 1 to 100, not a string"),
        (config(sources: sourceWith(#""pollInterval": "5 seconds""#)), "sources[0].pollInterval: must be a duration"),
        (config(sources: sourceWith(#""lookback": "48h""#)), "sources[0].lookback: must be at most 1d"),
        (config(sources: sourceWith(#""startFrom": "yesterday""#)), #"sources[0].startFrom: must be "now", "earliest" or an ISO-8601 time"#),
        (config(sources: sourceWith(#""rateLimit": {"perSecond": 0}"#)), "sources[0].rateLimit.perSecond: must be a number from 0.001"),
        (config(sources: #"[{"name": "acme", "clientId": "a", "accountId": "a", "brandId": "A", "authToken": {"env": "RELAY_TEST_UNSET"}}]"#),
         "sources[0].authToken: environment variable RELAY_TEST_UNSET is not set"),
        (config(sources: #"[{"name": "acme", "clientId": "a", "accountId": "a", "brandId": "A", "authToken": {"file": "/nonexistent/token"}}]"#),
         "sources[0].authToken: cannot read /nonexistent/token: No such file or directory"),
        (config(sources: #"[{"name": "acme", "clientId": "a", "accountId": "a", "brandId": "A", "authToken": {"credential": "tok"}}]"#),
         "sources[0].authToken: credential tok needs $CREDENTIALS_DIRECTORY"),
        (config(sources: #"[{"name": "acme", "clientId": "a", "accountId": "a", "brandId": "A", "authToken": {"env": "A", "file": "/x"}}]"#),
         #"sources[0].authToken: must have exactly one of "env", "file" or "credential""#),
        (config(sources: #"[{"name": "a", "clientId": "a", "accountId": "a", "brandId": "A", "authToken": "same"}, {"name": "b", "clientId": "b", "accountId": "b", "brandId": "B", "authToken": "same", "rateLimit": {"perSecond": 5}}]"#,
                subscriptions: #"[{"name": "hook", "source": "a", "webhook": {"url": "https://e.com/"}}]"#),
         "sources[1].rateLimit: must equal the rateLimit of source \"a\", which uses the same authToken"),
        (config(subscriptions: "[\(subscription), \(subscription)]"),
         #"subscriptions[1].name: duplicate subscription name "hook" (first used at subscriptions[0])"#),
        (config(subscriptions: #"[{"name": "hook", "source": "nope", "webhook": {"url": "https://e.com/"}}]"#),
         #"subscriptions[0].source: names no source (sources: "acme")"#),
        (config(sources: #"[\#(source), {"name": "b", "clientId": "b", "accountId": "b", "brandId": "B", "authToken": "t2"}]"#),
         "subscriptions[0].source: is required when there is more than one source"),
        (config(subscriptions: #"[\#(subscription), {"name": "h2", "webhook": {"url": "ftp://example.com/h"}}]"#),
         "subscriptions[1].webhook.url: must be an http or https URL"),
        (config(subscriptions: #"[{"name": "hook"}]"#), "subscriptions[0].webhook: is required"),
        (config(subscriptions: #"[{"name": "hook", "include": "email_click", "webhook": {"url": "https://e.com/"}}]"#),
         "subscriptions[0].include: must be an array of strings, not a string"),
        (config(subscriptions: webhookWith(#""secret": "not-a-whsec-secret""#)),
         #"subscriptions[0].webhook.secret: must be "whsec_" followed by the base64 of 24 to 64 bytes"#),
        (config(subscriptions: webhookWith(#""secret": "whsec_c2hvcnQ=""#)),
         #"subscriptions[0].webhook.secret: must be "whsec_" followed by the base64"#),
        (config(subscriptions: webhookWith(#""retry": {"maxAttempt": 3}"#)),
         #"subscriptions[0].webhook.retry.maxAttempt: unknown key (did you mean "maxAttempts"?)"#),
        (config(subscriptions: webhookWith(#""callback": {}"#)), "subscriptions[0].webhook.callback: unknown key"),
        (config(subscriptions: webhookWith(#""retry": {"maxAttempts": 0}"#)),
         "subscriptions[0].webhook.retry.maxAttempts: must be an integer from 1 to"),
        (config(subscriptions: webhookWith(#""retry": {"initialBackoff": "5s", "maxBackoff": "1s"}"#)),
         "subscriptions[0].webhook.retry.maxBackoff: maxBackoff (1s) must not be less than initialBackoff (5s)"),
        (config(subscriptions: webhookWith(#""ordering": "fifo""#)), #"subscriptions[0].webhook.ordering: must be one of "none", "strict""#),
        (config(subscriptions: webhookWith(#""payload": "raw""#)), #"subscriptions[0].webhook.payload: must be one of "event", "envelope""#),
        (config(subscriptions: webhookWith(#""batchSize": 0"#)), "subscriptions[0].webhook.batchSize: must be an integer from 1 to 1000"),
        (config(subscriptions: webhookWith(#""concurrency": 1000"#)), "subscriptions[0].webhook.concurrency: must be an integer from 1 to 256"),
        (config(subscriptions: webhookWith(#""timeout": "0ms""#)), "subscriptions[0].webhook.timeout: must be at least 100ms"),
        (config(subscriptions: webhookWith(#""headers": {"webhook-id": "x"}"#)),
         "subscriptions[0].webhook.headers.webhook-id: is set by the relay and cannot be overridden"),
        (config(subscriptions: webhookWith(#""headers": {"X Bad": "x"}"#)),
         #"subscriptions[0].webhook.headers["X Bad"]: is not a valid HTTP header name"#),
        (config(subscriptions: webhookWith(#""headers": {"X-A": "a\r\nX-Injected: 1"}"#)),
         "subscriptions[0].webhook.headers.X-A: value must not contain a line break or NUL"),
        (config(subscriptions: whereClause(#"{"all": [{"path": "properties.total", "op": "between", "value": 1}]}"#)),
         #"subscriptions[0].where.all[0].op: must be one of "eq", "ne", "in""#),
        (config(subscriptions: whereClause(#"{"path": "action", "op": "in", "value": "a"}"#)),
         #"subscriptions[0].where.value: must be an array for op "in""#),
        (config(subscriptions: whereClause(#"{"path": "properties.x", "op": "eq", "value": null}"#)),
         "subscriptions[0].where.value: must not be null"),
        (config(subscriptions: whereClause(#"{"path": "properties..x", "op": "exists"}"#)),
         "subscriptions[0].where.path: must be a dot-separated path"),
        (config(subscriptions: whereClause("{}")), #"subscriptions[0].where: must have "all", "any", "not", or "path" and "op""#),
        (config(subscriptions: whereClause(#"{"not": {"path": "a", "op": "exists", "value": "yes"}}"#)),
         #"subscriptions[0].where.not.value: must be true or false for op "exists""#),
        (config(extra: #""metrics": {"listen": "localhost"}"#), #"metrics.listen: must be "host:port""#),
        (config(extra: #""shutdownGrace": "1h""#), "shutdownGrace: must be at most 10m"),
        (config(extra: #""deadLetters": {"retention": "forever"}"#), "deadLetters.retention: must be a duration"),
        (config(sources: sourceWith(#""pageSize": 10, "pageSize": 20"#)), "sources[0].pageSize: duplicate key"),
        // The relay adds /track/...: a path here would be sent twice.
        (config(sources: sourceWith(#""baseURL": "https://tracking.example.com/track/""#)),
         "sources[0].baseURL: must be the scheme, host and port only"),
        (config(sources: sourceWith(#""baseURL": "https://tracking.example.com?x=1""#)),
         "sources[0].baseURL: must be the scheme, host and port only"),
        (config(subscriptions: #"[{"name": "hook", "include": ["a", "b"], "exclude": ["b"], "webhook": {"url": "https://e.com/"}}]"#),
         #"subscriptions[0].exclude: names "b", which include also names"#),
        (config(sources: sourceWith(#""pollInterval": "10ms""#)), "sources[0].pollInterval: must be at least 100ms"),
        (config(subscriptions: webhookWith(#""timeout": "2h""#)), "subscriptions[0].webhook.timeout: must be at most 1h"),
        (config(extra: #""metrics": {"listen": ":http"}"#), #"metrics.listen: must be "host:port""#),
        (config(subscriptions: #"[{"name": "hook", "webhook": {"url": {"env": "RELAY_TEST_UNSET"}}}]"#),
         "subscriptions[0].webhook.url: environment variable RELAY_TEST_UNSET is not set"),
        (config(extra: #""store": {"postgres": {"schema": "relay"}}"#), "store.postgres.url: is required"),
        (config(extra: #""store": {"postgres": {"url": "postgres://db/relay", "schema": "Relay-2"}}"#),
         "store.postgres.schema: must be a lowercase SQL identifier"),
        (config(extra: #""store": {"sqlite": {}, "postgres": {"url": "postgres://db/relay"}}"#), "store: must name one store"),
        (config(extra: #""store": {"postgres": {"url": "mysql://db/relay"}}"#), "store.postgres.url: must be a postgres:// or postgresql:// URL"),
        (config(extra: #""store": {"postgres": {"url": "postgres://relay@db/relay?sslmode=sometimes"}}"#),
         "store.postgres.url: has sslmode sometimes, not one of"),
    ]

    /// Valid configs beyond config/example.json, each for a form an operator may write.
    static let validConfigs: [String] = [
        config(),
        config(extra: #""metrics": {"listen": ":9464"}"#),
        config(extra: #""metrics": {"listen": "[::1]:9464"}, "shutdownGrace": "10m", "orphanRetention": "1h30m""#),
        config(sources: sourceWith(#""baseURL": "https://tracking.example.com:8443/", "pollInterval": "100ms", "lookback": "0s""#)),
        config(sources: sourceWith(#""baseURL": "http://127.0.0.1:8080""#)),
        config(subscriptions: #"[{"name": "hook", "include": ["a"], "exclude": ["b"], "webhook": {"url": "https://e.com/"}}]"#),
        config(subscriptions: #"[{"name": "hook", "webhook": {"url": {"env": "RELAY_TEST_HOOK_URL"}, "timeout": "1h"}}]"#),
        config(subscriptions: webhookWith(#""secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "retry": {"maxAge": "365d", "initialBackoff": "1ms", "maxBackoff": "7d"}"#)),
        config(extra: #""store": {"sqlite": {}}"#),
        config(extra: #""store": {"postgres": {"url": "postgres://relay:pw@db.example.com:5433/relay?sslmode=verify-full", "schema": "relay_two"}}"#),
        config(extra: #""store": {"postgres": {"url": {"env": "RELAY_TEST_POSTGRES_URL"}}}"#),
    ]

    /// The environment the verdict tests run check-config with: what the valid configs refer to, and nothing that
    /// the invalid ones must find unset.
    static let verdictEnvironment = [
        "RELAY_TEST_HOOK_URL": "https://hooks.example.com/hooks/catch/123/secret-path/",
        "RELAY_TEST_POSTGRES_URL": "postgresql://relay@/relay?host=/run/postgresql",
    ]

    /// Rules that look at more than one value, or at the machine: a JSON Schema cannot state them, so for these
    /// (and only these) the schema passes what check-config rejects.
    static let rulesBeyondASchema = [
        "environment variable", "cannot read /", "needs $CREDENTIALS_DIRECTORY", "duplicate source name",
        "duplicate subscription name", "names no source", "is required when there is more than one source",
        "must equal the rateLimit of source", "must not be less than initialBackoff", "which include also names",
        // A URL may be a secret read from the environment or a file: only the relay sees its scheme and parts.
        "store.postgres.url: must be a postgres", "store.postgres.url: has ", "store.postgres.url: names ",
    ]

    @Test func invalidConfigsAreEachRejectedWithExit78AndTheirPath() async throws {
        #expect(Self.invalidConfigs.count >= 20)
        try await withTemporaryDirectory { directory in
            for (index, (contents, expected)) in Self.invalidConfigs.enumerated() {
                let file = directory.appendingPathComponent("config-\(index).json")
                try contents.write(to: file, atomically: true, encoding: .utf8)
                let outcome = try await RelayBinary.run(["check-config", file.path])
                #expect(outcome.status == 78, "case \(index): \(expected)")
                #expect(
                    outcome.standardErrorLines.contains { $0.hasPrefix("\(file.path): \(expected)") },
                    "case \(index): wanted \(expected), got:\n\(outcome.standardError)")
                #expect(outcome.standardOutput.isEmpty, "case \(index)")
            }
        }
    }

    @Test func validConfigsAreAccepted() async throws {
        try await withTemporaryDirectory { directory in
            for (index, contents) in Self.validConfigs.enumerated() {
                let file = directory.appendingPathComponent("valid-\(index).json")
                try contents.write(to: file, atomically: true, encoding: .utf8)
                let outcome = try await RelayBinary.run(["check-config", "--config", file.path], environment: Self.verdictEnvironment)
                #expect(outcome.status == 0, "valid case \(index): \(outcome.standardError)")
            }
        }
    }

    /// Every config this suite knows, valid or not, through both check-config and the JSON Schema (as an editor
    /// or CI uses it): the same verdict, but for the rules listed in ``rulesBeyondASchema``.
    @Test func theSchemaAndCheckConfigGiveTheSameVerdict() async throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        try await withTemporaryDirectory { directory in
            var cases: [(file: String, rule: String?)] = [(repository.appendingPathComponent("config/example.json").path, nil)]
            // The daemon tests' configs go through the same comparison as they start (DaemonTests.withSetup).
            let status = directory.appendingPathComponent("status.json")
            try StatusCommandTests.config.write(to: status, atomically: true, encoding: .utf8)
            cases.append((status.path, nil))
            for (index, contents) in Self.validConfigs.enumerated() {
                let file = directory.appendingPathComponent("valid-\(index).json")
                try contents.write(to: file, atomically: true, encoding: .utf8)
                cases.append((file.path, nil))
            }
            for (index, (contents, rule)) in Self.invalidConfigs.enumerated() {
                let file = directory.appendingPathComponent("invalid-\(index).json")
                try contents.write(to: file, atomically: true, encoding: .utf8)
                cases.append((file.path, rule))
            }
            var environment = Self.verdictEnvironment
            environment["HOOK_AUTH"] = "Bearer example"
            environment["HOOK_SECRET"] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            environment["CREDENTIALS_DIRECTORY"] = repository.appendingPathComponent("config/example-credentials").path
            environment["TOKEN_NOT_NEEDED_FOR_STATUS"] = "t"
            environment["NOR_THIS"] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            let verdicts = try await Self.expectTheSchemaAgrees(cases.map(\.file), environment: environment)
            for (file, rule) in cases {
                #expect(verdicts[file]?.relayValid == (rule == nil), "\(file): \(rule ?? "valid")")
            }
            // Most of the known rules are the schema's too.
            let beyondSchema = verdicts.values.filter(\.beyondASchema).count
            #expect(beyondSchema < cases.count / 4, "\(beyondSchema) of \(cases.count)")
        }
    }

    struct Verdict {
        let relayValid: Bool
        /// check-config rejected it by one of ``rulesBeyondASchema``, which the schema cannot state.
        let beyondASchema: Bool
    }

    /// Puts each file through check-config and through the JSON Schema, and expects the same verdict from both
    /// but for the rules listed in ``rulesBeyondASchema``. Returns check-config's verdicts.
    @discardableResult
    static func expectTheSchemaAgrees(
        _ files: [String], environment: [String: String], in directory: URL? = nil, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> [String: Verdict] {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let schemaVerdicts = try await schemaVerdicts(files, repository: repository)
        var verdicts: [String: Verdict] = [:]
        for file in files {
            let outcome = try await RelayBinary.run(["check-config", file], environment: environment, in: directory)
            let relayValid = outcome.status == 0
            let beyondASchema = !relayValid && rulesBeyondASchema.contains(where: outcome.standardError.contains)
            verdicts[file] = Verdict(relayValid: relayValid, beyondASchema: beyondASchema)
            guard let schemaValid = schemaVerdicts[file] else {
                Issue.record("no schema verdict for \(file)", sourceLocation: sourceLocation)
                continue
            }
            if beyondASchema { continue }
            #expect(
                schemaValid == relayValid,
                "\(file): check-config says \(relayValid ? "valid" : outcome.standardError), the schema \(schemaValid ? "valid" : "invalid")",
                sourceLocation: sourceLocation)
        }
        return verdicts
    }

    /// FILE -> valid, from config/validate-with-schema.py (Python's jsonschema, as `make check-schema` uses).
    static func schemaVerdicts(_ files: [String], repository: URL) async throws -> [String: Bool] {
        let text = try await RelayBinary.run(
            ["python3", repository.appendingPathComponent("config/validate-with-schema.py").path] + files, environment: nil,
            executable: "/usr/bin/env"
        ).standardOutput
        var verdicts: [String: Bool] = [:]
        for line in text.split(separator: "\n") {
            for file in files where line.hasPrefix(file + ": ") {
                verdicts[file] = line.dropFirst(file.count + 2).hasPrefix("valid")
            }
        }
        #expect(verdicts.count == files.count, "validate-with-schema.py printed:\n\(text)")
        return verdicts
    }

    @Test func aWebhookURLMayBeASecretAndIsNeverPrinted() async throws {
        let contents = Self.config(subscriptions: #"[{"name": "hook", "webhook": {"url": {"env": "HOOK_URL"}}}]"#)
        try await withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("config.json")
            try contents.write(to: file, atomically: true, encoding: .utf8)
            let valid = try await RelayBinary.run(
                ["check-config", file.path], environment: ["HOOK_URL": "https://hooks.example.com/hooks/catch/123/secret-path/"])
            #expect(valid.status == 0, "\(valid.standardError)")
            #expect(valid.standardOutput.contains("to https://hooks.example.com/…"), "\(valid.standardOutput)")
            #expect(!valid.standardOutput.contains("secret-path"))

            let invalid = try await RelayBinary.run(["check-config", file.path], environment: ["HOOK_URL": "ftp://files.example.com/secret-path"])
            #expect(invalid.status == 78)
            #expect(
                invalid.standardError.contains("subscriptions[0].webhook.url: must be an http or https URL (read from env HOOK_URL)"),
                "\(invalid.standardError)")
            #expect(!invalid.standardError.contains("secret-path"))
        }
    }

    /// The shipped unit's TimeoutStopSec= is what check-config compares shutdownGrace with.
    @Test func aGraceLongerThanTheShippedUnitAllowsIsPointedOut() async throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let unit = try String(contentsOf: repository.appendingPathComponent("systemd/intilery-relay.service"), encoding: .utf8)
        #expect(unit.split(separator: "\n").contains("TimeoutStopSec=45s"))
        try await withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("config.json")
            try Self.config(extra: #""shutdownGrace": "10s""#).write(to: file, atomically: true, encoding: .utf8)
            let short = try await RelayBinary.run(["check-config", file.path])
            #expect(short.status == 0)
            #expect(!short.standardOutput.contains("TimeoutStopSec"))
            try Self.config(extra: #""shutdownGrace": "5m""#).write(to: file, atomically: true, encoding: .utf8)
            let long = try await RelayBinary.run(["check-config", file.path])
            #expect(long.status == 0)
            #expect(
                long.standardOutput.contains("Note: stopping may take up to 330s, more than the shipped unit's TimeoutStopSec=45s"),
                "\(long.standardOutput)")
        }
    }

    @Test func everyProblemOfOneFileIsReported() async throws {
        let contents = Self.config(
            sources: Self.sourceWith(#""pageSize": 0, "lookback": "x""#),
            subscriptions: Self.webhookWith(#""payload": "raw", "batchSize": 0"#, subscriptionMembers: #""bogus": 1"#),
            extra: #""shutdownGrace": 5"#)
        try await withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("many.json")
            try contents.write(to: file, atomically: true, encoding: .utf8)
            let outcome = try await RelayBinary.run(["check-config", file.path])
            #expect(outcome.status == 78)
            let paths = outcome.standardErrorLines.map { $0.dropFirst(file.path.count + 2).prefix { $0 != ":" } }
            #expect(
                Set(paths) == [
                    "shutdownGrace", "sources[0].pageSize", "sources[0].lookback", "subscriptions[0].bogus",
                    "subscriptions[0].webhook.payload", "subscriptions[0].webhook.batchSize",
                ], "\(outcome.standardError)")
        }
    }

    @Test func exampleConfigIsAcceptedAndSummarisedWithoutSecrets() async throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let environment = [
            "HOOK_AUTH": "Bearer distinctive-header-value-123",
            "HOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "CREDENTIALS_DIRECTORY": repository.appendingPathComponent("config/example-credentials").path,
        ]
        let outcome = try await RelayBinary.run(["check-config", "config/example.json"], environment: environment, in: repository)
        #expect(outcome.status == 0, "\(outcome.standardError)")
        let summary = outcome.standardOutput
        #expect(summary.hasPrefix("config/example.json is valid."))
        #expect(summary.contains("Source acme polls https://tracking.intilery.com/track/acme/acme/ACME/v1/events every 5s"))
        #expect(summary.contains("Subscription email-clicks sends acme's email_click events"))
        #expect(summary.contains("to https://hooks.zapier.com/…"))
        #expect(summary.contains("Subscription new-customers sends acme's identify events"))
        #expect(summary.contains("headers Authorization: <set>"))
        #expect(summary.contains("token <set>"))
        for secret in ["distinctive-header-value-123", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "example-intilery-token", "hooks/catch/123"] {
            #expect(!summary.contains(secret))
        }
    }

    @Test func missingFileIsAConfigError() async throws {
        let outcome = try await RelayBinary.run(["check-config", "/nonexistent/relay.json"])
        #expect(outcome.status == 78)
        #expect(outcome.standardError.contains("/nonexistent/relay.json: cannot read the file: No such file or directory"))
    }

    @Test func checkConfigTakesTheFileAsAnArgumentOrAsConfigLikeEveryOtherCommand() async throws {
        try await withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("config.json")
            try Self.config().write(to: file, atomically: true, encoding: .utf8)
            let positional = try await RelayBinary.run(["check-config", file.path])
            let option = try await RelayBinary.run(["check-config", "--config", file.path])
            #expect(positional.status == 0 && option.status == 0, "\(positional.standardError)\(option.standardError)")
            #expect(positional.standardOutput == option.standardOutput)
            let neither = try await RelayBinary.run(["check-config"])
            #expect(neither.status == 64)
            #expect(neither.standardError.contains("--config FILE"), "\(neither.standardError)")
            let both = try await RelayBinary.run(["check-config", "--config", file.path, file.path])
            #expect(both.status == 64)
        }
    }

    /// The commit `make stamp-commit` writes for this checkout: HEAD's short id, "-modified" when tracked files differ.
    static func expectedCommit() async throws -> String {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let git = ["git", "-c", "safe.directory=\(repository.path)", "-C", repository.path]
        let head = try await RelayBinary.run(git + ["rev-parse", "--short=12", "HEAD"], environment: nil, executable: "/usr/bin/env")
        guard head.status == 0 else { return "unknown" }
        let changes = try await RelayBinary.run(
            git + ["status", "--porcelain", "--untracked-files=no"], environment: nil, executable: "/usr/bin/env")
        let commit = head.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        return changes.standardOutput.isEmpty ? commit : commit + "-modified"
    }

    @Test func usageErrorsExit64AndUnfinishedCommandsSaySo() async throws {
        let usage = try await RelayBinary.run(["run"])
        #expect(usage.status == 64)
        #expect(usage.standardError.contains("--config"))
        let version = try await RelayBinary.run(["--version"])
        #expect(version.status == 0)
        #expect(version.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
        // What a bug report needs: the build and the libraries it loaded.
        let verbose = try await RelayBinary.run(["version"])
        #expect(verbose.status == 0)
        let lines = verbose.standardOutput.split(separator: "\n").map(String.init)
        #expect(lines.count == 5, "\(verbose.standardOutput)")
        #expect(lines.first == "intilery-relay " + version.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines))
        let commit = try await Self.expectedCommit()
        #expect(lines.count > 1 && lines[1] == "commit \(commit)", "built without `make stamp-commit`?")
        for (index, prefix) in ["commit ", "Swift 6.", "libcurl 7.", "SQLite 3."].enumerated() where lines.count == 5 {
            #expect(lines[index + 1].hasPrefix(prefix) || (prefix == "libcurl 7." && lines[index + 1].hasPrefix("libcurl 8.")), "\(lines[index + 1])")
        }
        for command in ["check-config", "run", "status", "dead-letters", "dead-letters list", "demo", "simulate"] {
            let help = try await RelayBinary.run(command.split(separator: " ").map(String.init) + ["--help"])
            #expect(help.status == 0, "\(command) --help")
            #expect(help.standardOutput.contains("USAGE: intilery-relay \(command)"), "\(command) --help")
        }
    }
}
