import RelayJSON

/// Reads and validates a config file, reporting every problem at once.
public enum ConfigLoader {
    static let topLevelKeys = [
        "$schema", "stateDirectory", "store", "shutdownGrace", "metrics", "sources", "subscriptions", "deadLetters",
        "orphanRetention",
    ]

    /// Reads `file` and validates it. `file` is named as given in every problem.
    public static func load(file: String, environment: ConfigEnvironment) throws(ConfigError) -> RelayConfig {
        let bytes: [UInt8]
        do {
            bytes = try FileBytes.read(file)
        } catch {
            throw ConfigError(file: file, problems: [ConfigProblem(path: "", rule: "cannot read the file: \(error.reason)")])
        }
        return try validate(bytes, file: file, environment: environment)
    }

    /// Validates a config document.
    public static func validate(_ bytes: [UInt8], file: String, environment: ConfigEnvironment) throws(ConfigError)
        -> RelayConfig
    {
        let document: JSONValue
        do {
            document = try JSONParser.parse(bytes)
        } catch {
            throw ConfigError(file: file, problems: [ConfigProblem(path: "", rule: "not valid JSON: \(error)")])
        }
        var reader = ConfigReader(environment: environment)
        let config = reader.relayConfig(document)
        guard reader.problems.isEmpty, let config else {
            throw ConfigError(file: file, problems: reader.problems)
        }
        return config
    }
}

extension ConfigReader {
    mutating func relayConfig(_ document: JSONValue) -> RelayConfig? {
        let root = ConfigPath.root
        guard let fields = object(document, at: root, allowed: ConfigLoader.topLevelKeys) else { return nil }
        var config = RelayConfig()
        config.stateDirectory = string(fields, "stateDirectory", at: root)
        if let grace = duration(fields, "shutdownGrace", at: root, in: .zero...(.seconds(600))) {
            config.shutdownGrace = grace
        }
        if let store = fields["store"], let parsed = self.store(store, at: root.key("store")) {
            config.store = parsed
        }
        if let metrics = fields["metrics"], let listen = metricsListen(metrics, at: root.key("metrics")) {
            config.metrics.listen = listen.address
        }
        if let deadLetters = fields["deadLetters"],
            let section = object(deadLetters, at: root.key("deadLetters"), allowed: ["retention"]),
            let retention = duration(section, "retention", at: root.key("deadLetters"), in: .seconds(60)...(.seconds(3650 * 86_400)))
        {
            config.deadLetters.retention = retention
        }
        if let retention = duration(fields, "orphanRetention", at: root, in: .seconds(60)...(.seconds(3650 * 86_400))) {
            config.orphanRetention = retention
        }
        let problemsBeforeSources = problems.count
        if let sources = required(fields, "sources", at: root) {
            config.sources = self.sources(sources, at: root.key("sources"))
        }
        let sourcesValid = problems.count == problemsBeforeSources
        let sourceCount = fields["sources"]?.arrayValue?.count ?? 0
        if let subscriptions = required(fields, "subscriptions", at: root) {
            config.subscriptions = self.subscriptions(
                subscriptions, at: root.key("subscriptions"),
                sourceNames: sourcesValid ? config.sources.map(\.name) : nil, sourceCount: sourceCount)
        }
        return config
    }

    /// `{"sqlite": {}}` or `{"postgres": {"url": SECRET, "schema": NAME}}`.
    private mutating func store(_ value: JSONValue, at path: ConfigPath) -> StoreConfig? {
        guard let fields = object(value, at: path, allowed: ["sqlite", "postgres"]) else { return nil }
        guard fields.keys.count == 1 else {
            problem(path, "must name one store: {\"sqlite\": {}} or {\"postgres\": {\"url\": ...}}")
            return nil
        }
        if let sqlite = fields["sqlite"] {
            _ = object(sqlite, at: path.key("sqlite"), allowed: [])
            return .sqlite
        }
        let postgresPath = path.key("postgres")
        guard let postgres = fields["postgres"], let section = object(postgres, at: postgresPath, allowed: ["url", "schema"]) else { return nil }
        // Every command that reads the state needs the database, so its URL is resolved even for those that
        // leave the other secrets alone.
        let resolvesSecrets = environment.resolvesSecrets
        environment.resolvesSecrets = true
        let url = secret(section, "url", at: postgresPath, required: true)
        environment.resolvesSecrets = resolvesSecrets
        var config = url.map { PostgresStoreConfig(url: $0) }
        if let schema = string(section, "schema", at: postgresPath) {
            if PostgresStoreConfig.isValidSchemaName(schema) {
                config?.schema = schema
            } else {
                problem(postgresPath.key("schema"), "must be a lowercase SQL identifier: a-z, 0-9 and _, not starting with a digit, at most 63 bytes")
            }
        }
        if let url = config?.url, !(url.exposedValue.hasPrefix("postgres://") || url.exposedValue.hasPrefix("postgresql://")) {
            problem(postgresPath.key("url"), "must be a postgres:// or postgresql:// URL")
        }
        return config.map(StoreConfig.postgres)
    }

    private mutating func metricsListen(_ value: JSONValue, at path: ConfigPath) -> (address: ListenAddress?, Void)? {
        guard let fields = object(value, at: path, allowed: ["listen"]), let text = string(fields, "listen", at: path)
        else { return nil }
        if text == "off" { return (nil, ()) }
        guard let address = ListenAddress(parsing: text) else {
            problem(path.key("listen"), "must be \"host:port\" (such as \"127.0.0.1:9464\" or \"[::1]:9464\") or \"off\"")
            return nil
        }
        return (address, ())
    }
}
