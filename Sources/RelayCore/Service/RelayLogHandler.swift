import Foundation
import Logging
import RelayJSON
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One line per log record on standard error, as logfmt (`ts=... level=info msg="..." source=acme`) or JSON.
/// Values come from the relay's own metadata, which never holds a token, secret or header value.
///
/// Numbers given as numbers (`.stringConvertible(count)`, ``LogSeconds``) are JSON numbers; under journald each
/// line starts with its syslog priority (`<3>`), so that `journalctl -p err` filters by severity; and a line
/// repeated (same level, message, source and subscription) more than ``RepeatLimiter/limit`` times a minute is
/// held back, then counted in one "suppressed" line.
public struct RelayLogHandler: LogHandler {
    /// The line format.
    public enum Format: String, Sendable {
        case logfmt, json
    }

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let format: Format
    private let syslogPriorities: Bool
    private let repeats: RepeatLimiter
    private let write: @Sendable (String) -> Void

    /// A handler writing `format` at `level` and above to standard error; `syslogPriorities` prefixes each line
    /// with its `<N>` (see ``writesToJournal(environment:)``). Handlers made with one `repeats` share its counts.
    public init(
        label: String, format: Format, level: Logger.Level, syslogPriorities: Bool = false, repeats: RepeatLimiter = .shared,
        write: @escaping @Sendable (String) -> Void = RelayLogHandler.writeToStandardError
    ) {
        self.label = label
        self.format = format
        self.logLevel = level
        self.syslogPriorities = syslogPriorities
        self.repeats = repeats
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let message = event.message.description
        let key = RepeatLimiter.Key(
            level: event.level, message: message, source: merged["source"].map { "\($0)" },
            subscription: merged["subscription"].map { "\($0)" }, kind: (merged["kind"] ?? merged["reason"]).map { "\($0)" })
        let verdict = event.level >= .warning && event.level < .critical ? repeats.admit(key) : .write(suppressedBefore: [])
        for summary in verdict.suppressedBefore { emit(summary) }
        guard case .write = verdict else { return }
        emit(level: event.level, message: message, metadata: merged)
    }

    /// Writes the counts of repeats held back in windows that have ended: called every few seconds, so that a burst
    /// followed by silence is still counted in the log. At the stop (`stopping`), those of windows still open too:
    /// the log is all there is of them once the process is gone.
    public func writeSuppressedSummaries(stopping: Bool = false) {
        for summary in stopping ? repeats.takeAll() : repeats.takeEnded() { emit(summary) }
    }

    private func emit(_ summary: RepeatLimiter.Summary) {
        var metadata: Logger.Metadata = ["suppressed": .stringConvertible(summary.count), "window_s": .stringConvertible(LogSeconds(RepeatLimiter.window))]
        if let source = summary.key.source { metadata["source"] = .string(source) }
        if let subscription = summary.key.subscription { metadata["subscription"] = .string(subscription) }
        if let kind = summary.key.kind { metadata["kind"] = .string(kind) }
        emit(level: summary.key.level, message: "suppressed \(summary.count) lines like: \(summary.key.message)", metadata: metadata)
    }

    private func emit(level: Logger.Level, message: String, metadata: Logger.Metadata) {
        var fields: [(String, Logger.MetadataValue)] = [
            ("ts", .string(Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)).iso8601)),
            ("level", .string(level.rawValue)), ("msg", .string(message)),
        ]
        for key in metadata.keys.sorted() { fields.append((key, metadata[key]!)) }
        var line = syslogPriorities ? "<\(Self.syslogPriority(level))>" : ""
        line += format == .json ? Self.json(fields) : Self.logfmt(fields)
        line += "\n"
        write(line)
    }

    /// One write(2) per line, so that lines from several threads never interleave.
    public static let writeToStandardError: @Sendable (String) -> Void = { line in
        var line = line
        line.withUTF8 { bytes in _ = Glibc.write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
    }

    /// sd-daemon(3)'s priorities: `<7>` debug ... `<2>` critical.
    static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    /// Whether standard error is the journal: systemd sets `JOURNAL_STREAM` to its `device:inode` (systemd.exec(5)).
    public static func writesToJournal(environment: [String: String]) -> Bool {
        guard let stream = environment["JOURNAL_STREAM"] else { return false }
        let parts = stream.split(separator: ":")
        var status = stat()
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]), fstat(STDERR_FILENO, &status) == 0
        else { return false }
        return UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode
    }

    static func logfmt(_ fields: [(String, Logger.MetadataValue)]) -> String {
        fields.map { key, value in
            let value = "\(value)"
            let plain = !value.isEmpty && !value.contains { $0 == " " || $0 == "=" || $0 == "\"" || $0.isNewline }
            if plain { return "\(key)=\(value)" }
            let escaped = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
            return "\(key)=\"\(escaped)\""
        }.joined(separator: " ")
    }

    static func json(_ fields: [(String, Logger.MetadataValue)]) -> String {
        JSONValue.object(JSONObject(fields.map { ($0.0, jsonValue($0.1)) })).description
    }

    /// Numbers and booleans given as such are JSON numbers and booleans; everything else is a string.
    private static func jsonValue(_ value: Logger.MetadataValue) -> JSONValue {
        switch value {
        case .string(let text):
            return .string(text)
        case .stringConvertible(let convertible):
            switch convertible {
            case let flag as Bool:
                return .bool(flag)
            case is any BinaryInteger, is LogSeconds:
                return .number(JSONNumber(text: convertible.description))
            case let number as Double where number.isFinite:
                return .number(JSONNumber(text: convertible.description))
            default:
                return .string(convertible.description)
            }
        case .array(let values):
            return .array(values.map(jsonValue))
        case .dictionary(let members):
            return .object(JSONObject(members.keys.sorted().map { ($0, jsonValue(members[$0]!)) }))
        }
    }
}

/// A duration in log metadata, as a number of seconds: `retry_in_s=30`, `"retry_in_s":0.25`.
public struct LogSeconds: CustomStringConvertible, Sendable {
    public let duration: Duration

    public init(_ duration: Duration) { self.duration = duration }

    public var description: String {
        let milliseconds = duration / .milliseconds(1)
        let seconds = milliseconds / 1000
        if milliseconds == seconds.rounded() * 1000 { return String(Int64(seconds.rounded())) }
        return String(Double(Int64((milliseconds).rounded())) / 1000)
    }
}

/// Holds back lines that repeat: a receiver answering 400 to every request must not write a line per event.
/// At most ``limit`` lines of one key per ``window``; the rest are counted, and the count is written (once the
/// window has passed) as one line before the next line of that key, or of any key.
public final class RepeatLimiter: Sendable {
    /// What makes two lines "the same": level, message, the source and subscription they are about, and the kind
    /// of failure (`kind=` or `reason=`), so that a flood of one kind never hides another.
    public struct Key: Hashable, Sendable {
        public let level: Logger.Level
        public let message: String
        public let source: String?
        public let subscription: String?
        public let kind: String?
    }

    public struct Summary: Sendable, Equatable {
        public let key: Key
        public let count: Int
    }

    public enum Verdict: Sendable, Equatable {
        /// Write the line, after these summaries of windows that have ended.
        case write(suppressedBefore: [Summary])
        /// Hold it back (counted).
        case suppress(suppressedBefore: [Summary])

        var suppressedBefore: [Summary] {
            switch self {
            case .write(let summaries), .suppress(let summaries): return summaries
            }
        }
    }

    public static let limit = 10
    public static let window: Duration = .seconds(60)
    /// The daemon's: every handler the logging system makes shares it.
    public static let shared = RepeatLimiter()

    private struct Window {
        var start: ContinuousClock.Instant
        var written = 0
        var suppressed = 0
    }

    private let windows = Mutex<[Key: Window]>([:])
    private let now: @Sendable () -> ContinuousClock.Instant

    /// `now` is injectable for tests.
    public init(now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }) {
        self.now = now
    }

    public func admit(_ key: Key) -> Verdict {
        let now = now()
        return windows.withLock { windows in
            let ended = Self.takeEnded(&windows, now: now)
            var window = windows[key] ?? Window(start: now)
            defer { windows[key] = window }
            if window.written < Self.limit {
                window.written += 1
                return .write(suppressedBefore: ended)
            }
            window.suppressed += 1
            return .suppress(suppressedBefore: ended)
        }
    }

    /// The counts of windows that have ended, which are forgotten.
    public func takeEnded() -> [Summary] {
        let now = now()
        return windows.withLock { Self.takeEnded(&$0, now: now) }
    }

    /// The counts of every window, ended or not, which are all forgotten: for the stop.
    public func takeAll() -> [Summary] {
        windows.withLock { windows in
            defer { windows = [:] }
            return windows.filter { $0.value.suppressed > 0 }.map { Summary(key: $0.key, count: $0.value.suppressed) }
        }
    }

    private static func takeEnded(_ windows: inout [Key: Window], now: ContinuousClock.Instant) -> [Summary] {
        var ended: [Summary] = []
        for (key, window) in windows where now - window.start >= Self.window {
            if window.suppressed > 0 { ended.append(Summary(key: key, count: window.suppressed)) }
            windows[key] = nil
        }
        return ended
    }
}
