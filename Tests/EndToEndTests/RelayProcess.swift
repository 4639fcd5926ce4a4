import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `intilery-relay run` as a child process, its standard error kept in a file.
final class RelayProcess: Sendable {
    let process: ChildProcess
    let logFile: URL

    /// `journal`: tell the relay its standard error is the journal (JOURNAL_STREAM names the log file).
    init(arguments: [String], environment: [String: String], directory: URL, journal: Bool = false) throws {
        logFile = directory.appendingPathComponent("relay-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let handle = try FileHandle(forWritingTo: logFile)
        defer { try? handle.close() }
        var environment = environment
        if journal {
            var status = stat()
            guard fstat(handle.fileDescriptor, &status) == 0 else { throw CocoaError(.fileReadUnknown) }
            environment["JOURNAL_STREAM"] = "\(status.st_dev):\(status.st_ino)"
        }
        StartedConfigs.keep(arguments: arguments, environment: environment, directory: directory)
        process = try ChildProcess(
            RelayBinary.path, arguments, environment: environment, directory: directory.path, stdin: nil,
            stdout: handle.fileDescriptor, stderr: handle.fileDescriptor)
    }

    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    func signal(_ signal: Int32) { kill(process.pid, signal) }

    /// Waits for the exit, up to `timeout` of real time; nil if it is still running then (and it is killed).
    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                kill(process.pid, SIGKILL)
                _ = process.wait()
                return nil
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return process.status
    }

    /// Waits until the log holds `text`, up to `timeout` of real time; false if it never came or the process ended.
    func waitForLog(containing text: String, timeout: Duration) async -> Bool {
        await waitForLog(containingAnyOf: [text], timeout: timeout)
    }

    /// Waits until the log holds one of `texts`, up to `timeout` of real time; false if none came or the process ended.
    func waitForLog(containingAnyOf texts: [String], timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if texts.contains(where: log.contains) { return true }
            if !process.isRunning { return texts.contains(where: log.contains) }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}
