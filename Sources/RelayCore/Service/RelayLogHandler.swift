import Foundation
import Logging
import RelayJSON
#if canImport(Glibc)
import Glibc
#endif

/// One line per log record on standard error, as logfmt (`ts=... level=info msg="..." source=acme`) or JSON.
/// Values come from the relay's own metadata, which never holds a token, secret or header value.
public struct RelayLogHandler: LogHandler {
    /// The line format.
    public enum Format: String, Sendable {
        case logfmt, json
    }

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let format: Format

    /// A handler writing `format` at `level` and above.
    public init(label: String, format: Format, level: Logger.Level) {
        self.label = label
        self.format = format
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [(String, String)] = [("ts", Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)).iso8601),
                                          ("level", event.level.rawValue), ("msg", event.message.description)]
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        for key in merged.keys.sorted() { fields.append((key, "\(merged[key]!)")) }
        var line = format == .json ? Self.json(fields) : Self.logfmt(fields)
        line += "\n"
        line.withUTF8 { bytes in _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
    }

    static func logfmt(_ fields: [(String, String)]) -> String {
        fields.map { key, value in
            let plain = !value.isEmpty && !value.contains { $0 == " " || $0 == "=" || $0 == "\"" || $0.isNewline }
            if plain { return "\(key)=\(value)" }
            let escaped = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
            return "\(key)=\"\(escaped)\""
        }.joined(separator: " ")
    }

    static func json(_ fields: [(String, String)]) -> String {
        var out = "{"
        for (index, (key, value)) in fields.enumerated() {
            if index > 0 { out += "," }
            JSONWriter.writeString(key, to: &out)
            out += ":"
            JSONWriter.writeString(value, to: &out)
        }
        return out + "}"
    }
}
