import Foundation

/// A resolved secret: a token, a header value or a webhook key.
///
/// Its value is reachable only through ``exposedValue``; every textual form of it is `<set>`, so that neither a
/// log line, an error nor a summary can print it by accident.
public struct Secret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// Where the value came from, which is safe to show.
    public let origin: SecretOrigin
    private let value: String

    /// Wraps a value read from `origin`.
    public init(_ value: String, origin: SecretOrigin) {
        self.value = value
        self.origin = origin
    }

    /// The secret itself, for the one place that must send it.
    public var exposedValue: String { value }

    public var description: String { "<set>" }
    public var debugDescription: String { "<set>" }
}

/// Where a secret is read from, as the config says.
public enum SecretOrigin: Sendable, Equatable, CustomStringConvertible {
    /// Written in the config itself.
    case literal
    /// An environment variable of this name.
    case environment(String)
    /// A file at this path.
    case file(String)
    /// A file of this name in `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`).
    case credential(String)

    public var description: String {
        switch self {
        case .literal: return "inline"
        case .environment(let name): return "env \(name)"
        case .file(let path): return "file \(path)"
        case .credential(let name): return "credential \(name)"
        }
    }
}

/// A Standard Webhooks signing key, from a `whsec_<base64>` secret.
public struct WebhookSigningKey: Sendable, Equatable, CustomStringConvertible {
    /// Where the secret came from.
    public let origin: SecretOrigin
    private let key: [UInt8]

    /// Decodes `whsec_<base64 of 24 to 64 bytes>`; nil when the secret is not of that form.
    public init?(_ secret: Secret) {
        let text = secret.exposedValue
        guard text.hasPrefix("whsec_"), let key = Data(base64Encoded: String(text.dropFirst(6))), (24...64).contains(key.count)
        else { return nil }
        self.key = Array(key)
        self.origin = secret.origin
    }

    /// The HMAC key bytes, for the signer only.
    public var exposedKey: [UInt8] { key }

    public var description: String { "<set>" }
}
