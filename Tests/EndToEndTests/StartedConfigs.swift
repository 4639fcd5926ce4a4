import Foundation
import Synchronization
import Testing

/// The configs the daemon tests start `run` with, copied as they were at the start (tests rewrite the file for
/// reloads), so that ``DaemonTests/withSetup(_:)`` can put each through the JSON Schema as well: every config the
/// suite runs the relay with is one the schema must agree about.
enum StartedConfigs {
    struct Started: Sendable {
        let copy: URL
        let environment: [String: String]
    }

    private static let started = Mutex<[String: [Started]]>([:])

    /// Called by ``RelayProcess`` before it starts the relay in `directory` with `arguments`.
    static func keep(arguments: [String], environment: [String: String], directory: URL) {
        guard let flag = arguments.firstIndex(of: "--config"), flag + 1 < arguments.count else { return }
        let file = URL(fileURLWithPath: arguments[flag + 1], relativeTo: directory)
        let copies = directory.appendingPathComponent("started-configs")
        let copy = copies.appendingPathComponent("\(UUID().uuidString).json")
        guard (try? FileManager.default.createDirectory(at: copies, withIntermediateDirectories: true)) != nil,
            (try? FileManager.default.copyItem(at: file, to: copy)) != nil
        else { return }
        started.withLock { $0[directory.standardizedFileURL.path, default: []].append(Started(copy: copy, environment: environment)) }
    }

    /// The configs started in `directory`, forgotten here.
    static func take(directory: URL) -> [Started] {
        started.withLock { $0.removeValue(forKey: directory.standardizedFileURL.path) ?? [] }
    }
}
