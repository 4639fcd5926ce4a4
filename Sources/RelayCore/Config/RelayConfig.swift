/// The whole validated config: what `run` needs, with every default filled in.
///
/// Built only by ``ConfigLoader``, which reports every problem of a file at once; each default is written and
/// documented on its property.
public struct RelayConfig: Sendable, Equatable {
    /// Where the state store lives; `nil` falls back to `$STATE_DIRECTORY`, then `./state`.
    public var stateDirectory: String? = nil
    /// How long in-flight requests may finish after SIGTERM. Default 10 s.
    public var shutdownGrace: Duration = .seconds(10)
    /// The metrics endpoint.
    public var metrics = MetricsConfig()
    /// Where state is kept. Default: SQLite in the state directory.
    public var store: StoreConfig = .sqlite
    /// The Events API accounts polled, at least one.
    public var sources: [SourceConfig] = []
    /// Where matching events go, at least one.
    public var subscriptions: [SubscriptionConfig] = []
    /// Dead-letter housekeeping.
    public var deadLetters = DeadLetterConfig()
    /// How long queued events and dead letters of a subscription that left the config are kept (re-adding the
    /// name within it resumes them). Default 7 days.
    public var orphanRetention: Duration = .seconds(7 * 86_400)

    /// Every default, no sources and no subscriptions: for tools and tests that build a config in code.
    public init() {}

    /// The subscriptions fed by one source.
    public func subscriptions(of source: SourceConfig) -> [SubscriptionConfig] {
        subscriptions.filter { $0.source == source.name }
    }
}

/// Where the relay keeps its state.
public enum StoreConfig: Sendable, Equatable {
    /// A SQLite file in the state directory: one instance.
    case sqlite
    /// A PostgreSQL database that several instances share (docs/several-instances.md).
    case postgres(PostgresStoreConfig)
}

/// A PostgreSQL database as the relay's store.
public struct PostgresStoreConfig: Sendable, Equatable {
    /// A libpq connection URL (`postgres://user:password@host:port/database?sslmode=...`), a secret in any form.
    public var url: Secret
    /// The schema the relay's tables live in, created if missing: a lowercase SQL identifier. Default
    /// `intilery_relay`.
    public var schema: String = "intilery_relay"

    public init(url: Secret, schema: String = "intilery_relay") {
        self.url = url
        self.schema = schema
    }

    /// Whether `name` can name the schema: a lowercase SQL identifier of at most 63 bytes, used unquoted.
    public static func isValidSchemaName(_ name: String) -> Bool {
        guard let first = name.utf8.first, (1...63).contains(name.utf8.count) else { return false }
        let lower = UInt8(ascii: "a")...UInt8(ascii: "z")
        let digits = UInt8(ascii: "0")...UInt8(ascii: "9")
        return (lower.contains(first) || first == UInt8(ascii: "_"))
            && name.utf8.allSatisfy { lower.contains($0) || digits.contains($0) || $0 == UInt8(ascii: "_") }
    }
}

/// Where `/metrics`, `/healthz` and `/readyz` are served.
public struct MetricsConfig: Sendable, Equatable {
    /// The address to listen on; `nil` when the config says `"off"`. Default `127.0.0.1:9464`.
    public var listen: ListenAddress? = ListenAddress(host: "127.0.0.1", port: 9464)
}

/// A host and port to bind.
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    /// An IP address or name; IPv6 without brackets.
    public var host: String
    /// 0 binds any free port.
    public var port: Int

    /// Parses `host:port` or `[v6]:port`.
    public init?(parsing text: String) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.contains(where: \.isWhitespace), portText.allSatisfy({ $0.isASCII && $0.isNumber }), let port = Int(portText),
            (0...65535).contains(port)
        else { return nil }
        // ":9464" is every interface, as Prometheus exporters read it.
        self.init(host: host.isEmpty ? Self.everyInterface : String(host), port: port)
    }

    /// What an empty host (`":9464"`) binds: IPv4 and IPv6 on a dual-stack host.
    public static let everyInterface = "::"

    /// Wraps a host and port.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// How long dead letters are kept.
public struct DeadLetterConfig: Sendable, Equatable {
    /// Dead letters older than this are deleted. Default 30 days.
    public var retention: Duration = .seconds(30 * 86_400)
}

/// A token bucket: a steady rate and how far above it a burst may go.
public struct RateLimit: Sendable, Equatable {
    /// Tokens added per second.
    public var perSecond: Double
    /// The bucket's size: requests that may go at once after a quiet spell.
    public var burst: Int

    /// Wraps a rate and burst.
    public init(perSecond: Double, burst: Int) {
        self.perSecond = perSecond
        self.burst = burst
    }

    /// The Events API's documented limit per token: 100 requests a second with a burst of 500.
    public static let intileryAPI = RateLimit(perSecond: 100, burst: 500)
}
