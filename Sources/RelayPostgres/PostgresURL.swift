import Foundation
import NIOSSL
import PostgresNIO

/// A connection URL as libpq takes it, `postgres://user:password@host:port/database?sslmode=…`, turned into a
/// client configuration with the relay's timeouts. A unix socket is named by its directory in `host=` (as
/// libpq does). TLS: `sslmode=require`, `verify-ca` and `verify-full` all verify the server's certificate
/// (libpq's `require` does not; the relay always verifies, as it does for webhooks); `prefer` uses TLS when
/// the server offers it, verified too; absent or `disable`, none.
public struct PostgresURL: Sendable, CustomStringConvertible {
    /// Whether the connection uses TLS (always verified when it does).
    public enum TLSUse: Sendable, Equatable {
        case none
        /// When the server offers it.
        case preferred
        /// Or no connection.
        case required
    }

    public let configuration: PostgresClient.Configuration
    public let tls: TLSUse
    /// The URL without its user and password, for logs and messages.
    public let description: String

    /// What a query may take before the server cancels it, unless the URL sets `statement_timeout`.
    public static let defaultStatementTimeout = Duration.seconds(30)
    /// How long a transaction may sit idle between statements before the server ends it.
    public static let idleInTransactionTimeout = Duration.seconds(5)

    public init(_ text: String) throws(PostgresURLError) {
        guard let components = URLComponents(string: text), let scheme = components.scheme,
            ["postgres", "postgresql"].contains(scheme)
        else { throw PostgresURLError("must be a postgres:// or postgresql:// URL") }
        var parameters: [String: String] = [:]
        for item in components.queryItems ?? [] { parameters[item.name] = item.value ?? "" }
        let known: Set = ["host", "port", "sslmode", "sslrootcert", "connect_timeout", "statement_timeout", "application_name"]
        if let unknown = parameters.keys.sorted().first(where: { !known.contains($0) }) {
            throw PostgresURLError("has a parameter the relay does not know: \(unknown) (known: \(known.sorted().joined(separator: ", ")))")
        }
        guard let user = components.percentEncodedUser?.removingPercentEncoding, !user.isEmpty else {
            throw PostgresURLError("names no user (postgres://USER@HOST/DATABASE)")
        }
        let password = components.percentEncodedPassword?.removingPercentEncoding
        let database = String(components.percentEncodedPath.dropFirst()).removingPercentEncoding.flatMap { $0.isEmpty ? nil : $0 }
        let portText = parameters["port"] ?? components.port.map(String.init) ?? "5432"
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw PostgresURLError("has port \(portText), not a number from 1 to 65535")
        }
        let socketDirectory = parameters["host"].flatMap { $0.hasPrefix("/") ? $0 : nil }
        let host = components.percentEncodedHost?.removingPercentEncoding.flatMap { $0.isEmpty ? nil : $0 }

        var configuration: PostgresClient.Configuration
        if let socketDirectory {
            configuration = .init(
                unixSocketPath: socketDirectory + "/.s.PGSQL.\(port)", username: user, password: password, database: database)
            tls = .none
        } else {
            guard let host = parameters["host"] ?? host else { throw PostgresURLError("names no host, and no socket directory in host=") }
            configuration = .init(host: host, port: port, username: user, password: password, database: database, tls: .disable)
            (tls, configuration.tls) = try Self.tls(mode: parameters["sslmode"], rootCertificate: parameters["sslrootcert"])
        }
        if let timeout = parameters["connect_timeout"] {
            guard let seconds = Int(timeout), seconds > 0 else {
                throw PostgresURLError("has connect_timeout \(timeout), not a whole number of seconds above 0")
            }
            configuration.options.connectTimeout = .seconds(seconds)
        }
        let statementTimeout = parameters["statement_timeout"] ?? String(Int(Self.defaultStatementTimeout / .milliseconds(1)))
        guard let milliseconds = Int(statementTimeout), milliseconds >= 0 else {
            throw PostgresURLError("has statement_timeout \(statementTimeout), not a whole number of milliseconds")
        }
        // Each connection starts with these settings: a query that hangs is cancelled by the server, and a
        // transaction left open by a stalled instance does not hold its locks for long. The relay sends a
        // transaction's statements back to back, so 5 s idle means the instance has stalled; a page it was
        // committing holds the lease row, and a takeover waits for it (docs/several-instances.md).
        configuration.options.additionalStartupParameters = [
            ("statement_timeout", String(milliseconds)),
            ("idle_in_transaction_session_timeout", String(Int(Self.idleInTransactionTimeout / .milliseconds(1)))),
            ("application_name", parameters["application_name"] ?? "intilery-relay"),
        ]
        self.configuration = configuration
        let place = socketDirectory.map { "\($0) (unix socket, port \(port))" } ?? "\(parameters["host"] ?? host ?? ""):\(port)"
        description = "\(scheme)://\(user)@\(place)/\(database ?? "")"
    }

    private static func tls(
        mode: String?, rootCertificate: String?
    ) throws(PostgresURLError) -> (TLSUse, PostgresClient.Configuration.TLS) {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .fullVerification
        if let rootCertificate {
            guard let certificates = try? NIOSSLCertificate.fromPEMFile(rootCertificate), !certificates.isEmpty else {
                throw PostgresURLError("has sslrootcert \(rootCertificate), which is not a readable PEM file of certificates")
            }
            tls.trustRoots = .certificates(certificates)
        }
        switch mode ?? "disable" {
        case "disable": return (.none, .disable)
        case "allow", "prefer": return (.preferred, .prefer(tls))
        case "require", "verify-ca", "verify-full": return (.required, .require(tls))
        default:
            throw PostgresURLError("has sslmode \(mode ?? ""), not one of disable, allow, prefer, require, verify-ca, verify-full")
        }
    }
}

/// A connection URL the relay cannot use. The message never holds the URL's password.
public struct PostgresURLError: Error, Equatable, CustomStringConvertible {
    public let description: String

    init(_ description: String) { self.description = description }
}
