import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `intilery-relay run` as a child process, its standard error kept in a file.
final class RelayProcess: Sendable {
    let process: Process
    let logFile: URL

    init(arguments: [String], environment: [String: String], directory: URL) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: RelayBinary.path)
        process.arguments = arguments
        process.environment = environment
        process.currentDirectoryURL = directory
        logFile = directory.appendingPathComponent("relay-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let handle = try FileHandle(forWritingTo: logFile)
        process.standardError = handle
        process.standardOutput = handle
        try process.run()
    }

    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Waits for the exit, up to `timeout` of real time; nil if it is still running then (and it is killed).
    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                return nil
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }
}

/// A Unix datagram socket standing in for systemd's `$NOTIFY_SOCKET`; collects what arrives.
final class NotifySocket: Sendable {
    let path: String
    private let fd: Int32
    private let received = Mutex<[String]>([])
    private let arrived: AsyncStream<String>.Continuation
    let messages: AsyncStream<String>

    init(directory: URL) throws {
        path = directory.appendingPathComponent("notify.sock").path
        let socketFD = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketFD, $0, length) }
        }
        guard bound == 0 else { throw POSIXError(.EADDRINUSE) }
        fd = socketFD
        let (messages, arrived) = AsyncStream.makeStream(of: String.self)
        self.messages = messages
        self.arrived = arrived
        let fd = socketFD
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(fd, &buffer, buffer.count, 0)
                if count <= 0 { break }
                arrived.yield(String(decoding: buffer[0..<count], as: UTF8.self))
            }
            arrived.finish()
        }
    }

    func close() { shutdown(fd, Int32(SHUT_RDWR)); Glibc.close(fd) }
}
