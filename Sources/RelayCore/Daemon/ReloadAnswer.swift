#if canImport(Glibc)
import Glibc
#endif
import RelayJSON

/// The daemon's answer to its latest reload, written to `reload-answer.json` in the state directory so that
/// `intilery-relay reload` (the unit's `ExecReload=`) can wait for it and fail when the config was rejected. A
/// signal carries no reply, and systemd 252 has no `Type=notify-reload`.
public struct ReloadAnswer: Sendable, Equatable {
    /// The file's name inside the state directory.
    public static let fileName = "reload-answer.json"

    public enum Outcome: String, Sendable {
        /// The new config is running.
        case applied
        /// The new config has problems; the old one keeps running.
        case rejected
    }

    /// The daemon that answered.
    public var pid: Int32
    /// `CLOCK_MONOTONIC` when the daemon began this reload, in nanoseconds: system-wide, so that `reload` can tell
    /// the answer to its own signal from an older one.
    public var startedAt: UInt64
    public var outcome: Outcome
    /// Each problem as check-config prints it (`FILE: path: rule`); never a secret's value.
    public var problems: [String]
    /// Settings the reload changed that take effect at the next restart.
    public var needsRestart: [String]

    public init(pid: Int32, startedAt: UInt64, outcome: Outcome, problems: [String] = [], needsRestart: [String] = []) {
        self.pid = pid
        self.startedAt = startedAt
        self.outcome = outcome
        self.problems = problems
        self.needsRestart = needsRestart
    }

    var json: JSONValue {
        .object(JSONObject([
            ("pid", .number(JSONNumber(Int(pid)))), ("startedAt", .number(JSONNumber(text: String(startedAt)))),
            ("outcome", .string(outcome.rawValue)), ("problems", .array(problems.map(JSONValue.string))),
            ("needsRestart", .array(needsRestart.map(JSONValue.string))),
        ]))
    }

    /// The answer in `directory`, or nil when there is none (or it is half written by an older release).
    public static func read(directory: String) -> ReloadAnswer? {
        guard let bytes = try? FileBytes.read(directory + "/" + fileName), let document = try? JSONParser.parse(bytes),
            let fields = document.objectValue, case .number(let pid)? = fields["pid"], let pid = Int32(pid.text),
            case .number(let started)? = fields["startedAt"], let startedAt = UInt64(started.text),
            let outcome = fields["outcome"]?.stringValue.flatMap(Outcome.init(rawValue:))
        else { return nil }
        let strings: (String) -> [String] = { key in fields[key]?.arrayValue?.compactMap(\.stringValue) ?? [] }
        return ReloadAnswer(pid: pid, startedAt: startedAt, outcome: outcome, problems: strings("problems"), needsRestart: strings("needsRestart"))
    }

    /// Deletes the answer in `directory`, if any.
    public static func remove(directory: String) {
        unlink(directory + "/" + fileName)
    }

    /// Replaces the answer in `directory` at once (a reader sees the old file or the new one, never half of one).
    public func write(directory: String) throws(StoreError) {
        let path = directory + "/" + Self.fileName
        let temporary = path + ".tmp"
        let bytes = Array((json.description + "\n").utf8)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError.directory("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count, rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw StoreError.directory("cannot write \(path): \(reason)")
        }
    }
}
