import RelayJSON

extension ConfigReader {
    static let sourceKeys = [
        "name", "baseURL", "clientId", "accountId", "brandId", "authToken", "startFrom", "pollInterval", "lookback",
        "pageSize", "rateLimit", "response",
    ]

    mutating func sources(_ value: JSONValue, at path: ConfigPath) -> [SourceConfig] {
        guard case .array(let elements) = value else {
            problem(path, "must be an array of sources, not \(value.typeName)")
            return []
        }
        if elements.isEmpty { problem(path, "must list at least one source") }
        var sources: [SourceConfig] = []
        var firstIndex: [String: Int] = [:]
        for (index, element) in elements.enumerated() {
            let itemPath = path.index(index)
            guard let source = source(element, at: itemPath) else { continue }
            if let first = firstIndex[source.name] {
                problem(itemPath.key("name"), "duplicate source name \"\(source.name)\" (first used at \(path.index(first)))")
                continue
            }
            firstIndex[source.name] = index
            if let other = sources.first(where: { $0.authToken == source.authToken && $0.rateLimit != source.rateLimit }) {
                problem(
                    itemPath.key("rateLimit"),
                    "must equal the rateLimit of source \"\(other.name)\", which uses the same authToken and so the same API limit"
                )
            }
            sources.append(source)
        }
        return sources
    }

    private mutating func source(_ value: JSONValue, at path: ConfigPath) -> SourceConfig? {
        guard let fields = object(value, at: path, allowed: Self.sourceKeys) else { return nil }
        let problemsBefore = problems.count
        let name = name(fields, "name", at: path, pattern: "[a-z0-9_-]+") { $0.isASCIILowerOrDigit || $0 == "_" || $0 == "-" }
        let baseURL = originURL(fields, "baseURL", at: path)
        let pathSafe: (Unicode.Scalar) -> Bool = { $0.isASCIILetterOrDigit || $0 == "_" || $0 == "-" || $0 == "." }
        let clientId = self.name(fields, "clientId", at: path, pattern: "[A-Za-z0-9._-]+", allowed: pathSafe)
        let accountId = self.name(fields, "accountId", at: path, pattern: "[A-Za-z0-9._-]+", allowed: pathSafe)
        let brandId = self.name(fields, "brandId", at: path, pattern: "[A-Za-z0-9._-]+", allowed: pathSafe)
        let authToken = secret(fields, "authToken", at: path, required: true)
        if let authToken, authToken.exposedValue.contains(where: { $0.isNewline || $0 == "\0" }) {
            problem(path.key("authToken"), "must not contain a line break")
        }
        let startFrom = startPosition(fields, at: path)
        let pollInterval = duration(fields, "pollInterval", at: path, in: .milliseconds(100)...(.seconds(86_400)))
        let lookback = duration(fields, "lookback", at: path, in: .zero...(.seconds(86_400)))
        let pageSize = integer(fields, "pageSize", at: path, in: 1...100)
        let rateLimit = rateLimit(fields, "rateLimit", at: path, defaults: .intileryAPI)
        let response = responseOverrides(fields, at: path)

        guard problems.count == problemsBefore, let name, let clientId, let accountId, let brandId, let authToken else {
            return nil
        }
        var source = SourceConfig(name: name, clientId: clientId, accountId: accountId, brandId: brandId, authToken: authToken)
        if let baseURL { source.baseURL = baseURL }
        if let startFrom { source.startFrom = startFrom }
        if let pollInterval { source.pollInterval = pollInterval }
        if let lookback { source.lookback = lookback }
        if let pageSize { source.pageSize = pageSize }
        if let rateLimit { source.rateLimit = rateLimit }
        source.response = response
        return source
    }

    mutating func startPosition(_ fields: JSONObject, at path: ConfigPath) -> StartPosition? {
        guard let value = fields["startFrom"] else { return nil }
        switch value.stringValue {
        case "now": return .now
        case "earliest": return .earliest
        case let text?:
            if let time = Timestamp(iso8601: text) { return .time(time) }
        case nil: break
        }
        problem(path.key("startFrom"), "must be \"now\", \"earliest\" or an ISO-8601 time such as \"2024-05-01T00:00:00Z\"")
        return nil
    }

    private mutating func responseOverrides(_ fields: JSONObject, at path: ConfigPath) -> ResponseShapeOverrides? {
        guard let value = fields["response"] else { return nil }
        let path = path.key("response")
        guard
            let response = object(
                value, at: path, allowed: ["eventsPath", "idField", "timestampField", "actionField"])
        else { return nil }
        var overrides = ResponseShapeOverrides()
        if let pointerValue = response["eventsPath"] {
            if case .string(let pointer) = pointerValue, pointer.isEmpty || pointer.hasPrefix("/") {
                overrides.eventsPath = pointer
            } else {
                problem(path.key("eventsPath"), "must be a JSON pointer such as \"/data/events\" (or \"\" for the whole body)")
            }
        }
        for key in ["idField", "timestampField", "actionField"] {
            guard let text = string(response, key, at: path) else { continue }
            guard FieldPath(text) != nil else {
                problem(path.key(key), "must be a dot-separated path such as \"meta.id\"")
                continue
            }
            switch key {
            case "idField": overrides.idField = text
            case "timestampField": overrides.timestampField = text
            default: overrides.actionField = text
            }
        }
        return overrides
    }
}
