import Foundation
import Testing

/// The real `intilery-relay` executable, as built beside the test bundle, run as a child process.
enum RelayBinary {
    static var path: String {
        if let override = ProcessInfo.processInfo.environment["INTILERY_RELAY_BINARY"] { return override }
        let testBundle = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return testBundle.deletingLastPathComponent().appendingPathComponent("intilery-relay").path
    }

    struct Outcome {
        var status: Int32
        var standardOutput: String
        var standardError: String
        var standardErrorLines: [String] { standardError.split(separator: "\n").map(String.init) }
    }

    /// Runs the binary to completion with exactly `environment` (nothing inherited; nil inherits) and returns what
    /// it printed.
    /// `executable` runs another program instead (such as script(1) around the relay); `input` is its standard input.
    ///
    /// The wait happens on a thread of its own: tests run in parallel on Swift's cooperative pool, which has one
    /// thread per core, and two children waited for on it (a 3 s `demo`, say) would stall every in-process server
    /// reply made by a task in the meantime.
    static func run(
        _ arguments: [String], environment: [String: String]? = [:], in directory: URL? = nil, executable: String? = nil, input: [UInt8]? = nil
    ) async throws -> Outcome {
        try await offThePool { try runWaiting(arguments, environment: environment, in: directory, executable: executable, input: input) }
    }

    private static func runWaiting(
        _ arguments: [String], environment: [String: String]?, in directory: URL?, executable: String?, input: [UInt8]?
    ) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable ?? path)
        process.arguments = arguments
        if let environment { process.environment = environment }
        if let directory { process.currentDirectoryURL = directory }
        let out = Pipe()
        let err = Pipe()
        let stdin = Pipe()
        process.standardOutput = out
        process.standardError = err
        if input != nil { process.standardInput = stdin }
        try launch(process)
        if let input {
            stdin.fileHandleForWriting.write(Data(input))
            try stdin.fileHandleForWriting.close()
        }
        // Read before waiting, so that a chatty child cannot fill a pipe and stall.
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Outcome(
            status: process.terminationStatus,
            standardOutput: String(decoding: outData, as: UTF8.self),
            standardError: String(decoding: errData, as: UTF8.self))
    }
}

/// Starts `process`, one launch at a time in this test process: Foundation's `Process.run()` lists the open
/// descriptors to close them in the child, and launches racing on other threads crashed it (a memcpy past its
/// buffer, in CI).
func launch(_ process: Process) throws {
    try processLaunch.withLock { try process.run() }
}

private let processLaunch = NSLock()

/// Runs blocking `work` (waiting for a child process) on a new thread, leaving the cooperative pool free.
func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
    }
}

/// A temporary directory removed when the scope ends.
func withTemporaryDirectory<T>(_ body: (URL) throws -> T) throws -> T {
    let directory = try makeTemporaryDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    return try body(directory)
}

/// A temporary directory removed when the scope ends, for async tests.
func withTemporaryDirectory<T>(_ body: (URL) async throws -> T) async throws -> T {
    let directory = try makeTemporaryDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    return try await body(directory)
}

private func makeTemporaryDirectory() throws -> URL {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("relay-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return directory
}
