import RelayJSON

extension ConfigReader {
    static let subscriptionKeys = ["name", "source", "include", "exclude", "where", "startFrom", "webhook"]
    static let webhookKeys = [
        "url", "headers", "secret", "timeout", "payload", "batchSize", "concurrency", "ordering", "rateLimit", "retry",
        "pauseAfter", "maxQueued",
    ]
    /// Headers the relay sets itself; a subscription overriding them would break signing or framing.
    static let reservedHeaders: Set<String> = [
        "webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length", "host",
        "transfer-encoding", "connection", "expect", "te", "upgrade",
    ]

    /// `sourceNames` is nil when the sources themselves had problems, so that references are not blamed twice.
    mutating func subscriptions(_ value: JSONValue, at path: ConfigPath, sourceNames: [String]?, sourceCount: Int)
        -> [SubscriptionConfig]
    {
        guard case .array(let elements) = value else {
            problem(path, "must be an array of subscriptions, not \(value.typeName)")
            return []
        }
        if elements.isEmpty { problem(path, "must list at least one subscription") }
        var subscriptions: [SubscriptionConfig] = []
        var firstIndex: [String: Int] = [:]
        for (index, element) in elements.enumerated() {
            let itemPath = path.index(index)
            let subscription = subscription(element, at: itemPath, sourceNames: sourceNames, sourceCount: sourceCount)
            guard let subscription else { continue }
            if let first = firstIndex[subscription.name] {
                problem(
                    itemPath.key("name"),
                    "duplicate subscription name \"\(subscription.name)\" (first used at \(path.index(first)))")
                continue
            }
            firstIndex[subscription.name] = index
            subscriptions.append(subscription)
        }
        return subscriptions
    }

    private mutating func subscription(
        _ value: JSONValue, at path: ConfigPath, sourceNames: [String]?, sourceCount: Int
    ) -> SubscriptionConfig? {
        guard let fields = object(value, at: path, allowed: Self.subscriptionKeys) else { return nil }
        let problemsBefore = problems.count
        // Names appear in webhook-id headers, metric labels and log lines: keep them to safe characters.
        let name = name(fields, "name", at: path, pattern: "[A-Za-z0-9._-]+") {
            $0.isASCIILetterOrDigit || $0 == "_" || $0 == "-" || $0 == "."
        }
        var source = string(fields, "source", at: path)
        if let named = source, let sourceNames, !sourceNames.contains(named) {
            problem(path.key("source"), "names no source (sources: \(sourceNames.map { "\"\($0)\"" }.joined(separator: ", ")))")
        } else if source == nil, fields["source"] == nil {
            if sourceCount == 1 {
                source = sourceNames?.first
            } else if sourceCount > 1 {
                problem(path.key("source"), "is required when there is more than one source")
            }
        }
        let include = stringList(fields, "include", at: path)
        let exclude = stringList(fields, "exclude", at: path)
        if let include, let exclude {
            // Exclusion wins, so such an action is never sent: almost surely not what the author meant.
            let both = Set(include).intersection(exclude).sorted()
            if !both.isEmpty {
                problem(path.key("exclude"), "names \(both.map { "\"\($0)\"" }.joined(separator: ", ")), which include also names")
            }
        }
        var filter: EventFilter?
        if let value = fields["where"] { filter = self.filter(value, at: path.key("where")) }
        let startFrom = startPosition(fields, at: path)
        var webhook: WebhookConfig?
        if let value = required(fields, "webhook", at: path) { webhook = self.webhook(value, at: path.key("webhook")) }

        guard problems.count == problemsBefore, let name, let source, let webhook else { return nil }
        var subscription = SubscriptionConfig(
            name: name, source: source, include: include ?? [], exclude: exclude ?? [], filter: filter, webhook: webhook)
        if let startFrom { subscription.startFrom = startFrom }
        return subscription
    }

    /// A string, or a secret (a catch hook's path is its credential); either way an http or https URL.
    private mutating func webhookURL(_ fields: JSONObject, at path: ConfigPath) -> String? {
        guard let value = required(fields, "url", at: path) else { return nil }
        if value.stringValue != nil { return httpURL(fields, "url", at: path) }
        guard let secret = secret(value, at: path.key("url")) else { return nil }
        // Not resolved (state commands): nothing will be sent, and the value must not be guessed.
        guard environment.resolvesSecrets else { return "" }
        guard Self.isHTTPURL(secret.exposedValue) else {
            // The value is a secret: the problem must not quote it.
            problem(path.key("url"), "must be an http or https URL (read from \(secret.origin))")
            return nil
        }
        return secret.exposedValue
    }

    private mutating func webhook(_ value: JSONValue, at path: ConfigPath) -> WebhookConfig? {
        guard let fields = object(value, at: path, allowed: Self.webhookKeys) else { return nil }
        let problemsBefore = problems.count
        let url = webhookURL(fields, at: path)
        let headers = headers(fields, at: path)
        var signingKey: WebhookSigningKey?
        if let secret = secret(fields, "secret", at: path) {
            signingKey = WebhookSigningKey(secret)
            if signingKey == nil && environment.resolvesSecrets {
                problem(path.key("secret"), "must be \"whsec_\" followed by the base64 of 24 to 64 bytes (Standard Webhooks)")
            }
        }
        let timeout = duration(fields, "timeout", at: path, in: .milliseconds(100)...(.seconds(3600)))
        let payload = choice(fields, "payload", at: path, as: PayloadFormat.self)
        let batchSize = integer(fields, "batchSize", at: path, in: 1...1000)
        let concurrency = integer(fields, "concurrency", at: path, in: 1...256)
        let pauseAfter = integer(fields, "pauseAfter", at: path, in: 0...1_000_000)
        let maxQueued = integer(fields, "maxQueued", at: path, in: 100...1_000_000_000)
        let ordering = choice(fields, "ordering", at: path, as: DeliveryOrdering.self)
        let rateLimit = rateLimit(fields, "rateLimit", at: path, defaults: RateLimit(perSecond: 10, burst: 10))
        var retry: RetryPolicy?
        if let value = fields["retry"] { retry = retryPolicy(value, at: path.key("retry")) }

        guard problems.count == problemsBefore, let url else { return nil }
        var webhook = WebhookConfig(url: url)
        webhook.headers = headers
        webhook.signingKey = signingKey
        if let timeout { webhook.timeout = timeout }
        if let payload { webhook.payload = payload }
        if let batchSize { webhook.batchSize = batchSize }
        if let concurrency { webhook.concurrency = concurrency }
        if let pauseAfter { webhook.pauseAfter = pauseAfter }
        if let maxQueued { webhook.maxQueued = maxQueued }
        if let ordering { webhook.ordering = ordering }
        webhook.rateLimit = rateLimit
        if let retry { webhook.retry = retry }
        return webhook
    }

    private mutating func headers(_ fields: JSONObject, at path: ConfigPath) -> [(name: String, value: Secret)] {
        guard let value = fields["headers"] else { return [] }
        let path = path.key("headers")
        guard case .object(let object) = value else {
            problem(path, "must be an object of header names to values, not \(value.typeName)")
            return []
        }
        var headers: [(name: String, value: Secret)] = []
        var seen = Set<String>()
        for (name, headerValue) in object.members {
            let headerPath = path.key(name)
            guard seen.insert(name.lowercased()).inserted else {
                problem(headerPath, "duplicate header (names are case-insensitive)")
                continue
            }
            guard !name.isEmpty, name.unicodeScalars.allSatisfy(Self.isTokenCharacter) else {
                problem(headerPath, "is not a valid HTTP header name")
                continue
            }
            guard !Self.reservedHeaders.contains(name.lowercased()) else {
                problem(headerPath, "is set by the relay and cannot be overridden")
                continue
            }
            guard let secret = secret(headerValue, at: headerPath) else { continue }
            guard !secret.exposedValue.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) else {
                problem(headerPath, "value must not contain a line break or NUL")
                continue
            }
            headers.append((name, secret))
        }
        return headers
    }

    /// RFC 9110 `tchar`.
    static func isTokenCharacter(_ scalar: Unicode.Scalar) -> Bool {
        scalar.isASCIILetterOrDigit || "!#$%&'*+-.^_`|~".unicodeScalars.contains(scalar)
    }

    private mutating func retryPolicy(_ value: JSONValue, at path: ConfigPath) -> RetryPolicy? {
        guard let fields = object(value, at: path, allowed: ["maxAttempts", "maxAge", "initialBackoff", "maxBackoff"])
        else { return nil }
        let problemsBefore = problems.count
        var policy = RetryPolicy()
        if let attempts = integer(fields, "maxAttempts", at: path, in: 1...1_000_000) { policy.maxAttempts = attempts }
        if let age = duration(fields, "maxAge", at: path, in: .seconds(1)...(.seconds(365 * 86_400))) { policy.maxAge = age }
        if let initial = duration(fields, "initialBackoff", at: path, in: .milliseconds(1)...(.seconds(86_400))) {
            policy.initialBackoff = initial
        }
        if let maximum = duration(fields, "maxBackoff", at: path, in: .milliseconds(1)...(.seconds(7 * 86_400))) {
            policy.maxBackoff = maximum
        }
        guard problems.count == problemsBefore else { return nil }
        if policy.maxBackoff < policy.initialBackoff {
            problem(
                path.key(fields["maxBackoff"] == nil ? "initialBackoff" : "maxBackoff"),
                "maxBackoff (\(DurationText.format(policy.maxBackoff))) must not be less than initialBackoff (\(DurationText.format(policy.initialBackoff)))"
            )
            return nil
        }
        return policy
    }
}
