import Foundation
#if canImport(Glibc)
import Glibc
#endif
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
        let out = try closeOnExecPipe()
        let err = try closeOnExecPipe()
        let stdin = try input.map { _ in try closeOnExecPipe() }
        let child: ChildProcess
        do {
            child = try ChildProcess(
                executable ?? path, arguments, environment: environment, directory: directory?.path, stdin: stdin?.read,
                stdout: out.write, stderr: err.write)
        } catch {
            for descriptor in [out.read, out.write, err.read, err.write, stdin?.read, stdin?.write].compactMap({ $0 }) { close(descriptor) }
            throw error
        }
        close(out.write)
        close(err.write)
        if let stdin, let input {
            close(stdin.read)
            input.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = write(stdin.write, bytes.baseAddress! + offset, bytes.count - offset)
                    if written <= 0 { break }
                    offset += written
                }
            }
            close(stdin.write)
        }
        // Both read to their end together, so that a chatty child cannot fill one pipe and stall.
        let (outData, errData) = readBoth(out.read, err.read)
        return Outcome(
            status: child.wait(),
            standardOutput: String(decoding: outData, as: UTF8.self),
            standardError: String(decoding: errData, as: UTF8.self))
    }

    /// Reads two descriptors to their ends, then closes them.
    private static func readBoth(_ first: Int32, _ second: Int32) -> ([UInt8], [UInt8]) {
        var data: [[UInt8]] = [[], []]
        var open = [first, second]
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while open.contains(where: { $0 >= 0 }) {
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            guard Glibc.poll(&fds, nfds_t(fds.count), -1) >= 0 || errno == EINTR else { break }
            for index in fds.indices where open[index] >= 0 && fds[index].revents != 0 {
                let count = buffer.withUnsafeMutableBytes { read(open[index], $0.baseAddress, $0.count) }
                if count > 0 {
                    data[index] += buffer[0..<count]
                } else if count == 0 || errno != EINTR {
                    close(open[index])
                    open[index] = -1
                }
            }
        }
        return (data[0], data[1])
    }
}

/// Runs blocking `work` (waiting for a child process) on a new thread, leaving the cooperative pool free.
private func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
    }
}

/// A temporary directory removed when the scope ends.
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
