/// Why the state store could not be used. Always an I/O problem for the operator (exit 74): a full disk, an
/// unwritable directory, a corrupt file. Never carries event payloads or secrets.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    private enum Code: Sendable {
        case directory
        case diskFull
        case io
        case cancelled
    }

    private let code: Code
    /// What was being done, and the system's or SQLite's words for what went wrong.
    public let detail: String

    private init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    /// The state directory cannot be created or used.
    public static func directory(_ detail: String) -> Self { .init(.directory, detail) }
    /// SQLite said the disk is full.
    public static func diskFull(_ detail: String) -> Self { .init(.diskFull, detail) }
    /// Any other SQLite or file error.
    public static func io(_ detail: String) -> Self { .init(.io, detail) }

    /// The task was cancelled while waiting for the database: a stop, not a failure.
    public static let cancelled = StoreError(.cancelled, "cancelled")

    /// Whether this is only a cancellation.
    public var isCancellation: Bool { code == .cancelled }

    /// Whether the disk was full: the relay waits and retries rather than dropping anything.
    public var isDiskFull: Bool { code == .diskFull }

    /// A fixed label for metrics.
    public var shortDescription: String {
        switch code {
        case .directory: return "state_directory"
        case .diskFull: return "disk_full"
        case .io: return "io_error"
        case .cancelled: return "cancelled"
        }
    }

    public var description: String {
        switch code {
        case .directory: return "state directory: \(detail)"
        case .diskFull: return "state store: disk full: \(detail)"
        case .io: return "state store: \(detail)"
        case .cancelled: return "state store: operation cancelled"
        }
    }
}
