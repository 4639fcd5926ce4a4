/// One thing wrong with a config: where (a JSON path such as `subscriptions[1].webhook.url`) and what rule.
public struct ConfigProblem: Sendable, Equatable, CustomStringConvertible {
    /// The JSON path of the offending value; empty for the document as a whole.
    public var path: String
    /// The rule it breaks, never quoting a secret.
    public var rule: String

    public var description: String { path.isEmpty ? rule : "\(path): \(rule)" }
}

/// Every problem found in one config file.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    /// The file as the user named it.
    public var file: String
    /// The problems, in document order.
    public var problems: [ConfigProblem]

    /// One line per problem: `FILE: path: rule`.
    public var lines: [String] { problems.map { "\(file): \($0)" } }

    public var description: String { lines.joined(separator: "\n") }
}

/// What the loader reads from outside the file: environment variables and secret files.
public struct ConfigEnvironment: Sendable {
    /// Environment variables, for `{"env": NAME}` and `$CREDENTIALS_DIRECTORY`.
    public var variables: [String: String]
    /// Reads a secret file.
    public var readFile: @Sendable (String) throws(FileReadError) -> [UInt8]
    /// False for commands that only read the state (`status`, `dead-letters`): they need no secrets, and an
    /// operator's shell does not have systemd's credentials.
    public var resolvesSecrets = true

    /// An environment of these variables, reading real files.
    public init(
        variables: [String: String],
        readFile: @escaping @Sendable (String) throws(FileReadError) -> [UInt8] = { path throws(FileReadError) in
            try FileBytes.read(path, limit: 1 << 20)
        }
    ) {
        self.variables = variables
        self.readFile = readFile
    }
}
