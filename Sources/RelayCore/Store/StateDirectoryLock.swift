import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive `flock` on `relay.lock` in the state directory, held for the life of `run`: two daemons on one
/// state would each deliver what the other delivers. Read-only commands (`status`, `dead-letters`) do not take it.
/// The kernel drops the lock when the process exits, however it exits, so a crash never leaves it stale.
public final class StateDirectoryLock: Sendable {
    /// The lock file's name inside the state directory.
    public static let fileName = "relay.lock"

    /// Another process holds the lock.
    public struct InUse: Error, Sendable, CustomStringConvertible {
        /// The state directory.
        public let directory: String
        /// The holder's pid as it wrote it, when readable.
        public let pid: Int32?

        public var description: String {
            "state directory \(directory) is in use by " + (pid.map { "pid \($0)" } ?? "another process")
        }
    }

    private let descriptor: Int32

    private init(descriptor: Int32) { self.descriptor = descriptor }

    deinit { close(descriptor) }

    /// Drops the lock (closing the file does too; this makes the point where it ends explicit).
    public func release() { _ = flock(descriptor, LOCK_UN) }

    /// Takes the lock without waiting, creating the directory (0700) and the file (0600) if need be, and writes
    /// this process's pid into it. Throws ``InUse`` when another process holds it, ``StoreError`` when the
    /// directory or file cannot be used.
    public static func acquire(directory: String) throws -> StateDirectoryLock {
        try StateStore.prepareDirectory(directory)
        let path = directory + "/" + fileName
        let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError.directory("cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let error = errno
            let holder = readPID(fd)
            close(fd)
            if error == EWOULDBLOCK { throw InUse(directory: directory, pid: holder) }
            throw StoreError.directory("cannot lock \(path): \(String(cString: strerror(error)))")
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        return StateDirectoryLock(descriptor: fd)
    }

    /// Whether a process holds the lock of `directory` and, when it wrote one, its pid. Probes with a shared lock
    /// dropped at once: a daemon starting in that instant may find it taken and exit 75 (systemd restarts it).
    public static func holder(directory: String) -> (held: Bool, pid: Int32?) {
        let fd = open(directory + "/" + fileName, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return (false, nil) }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            _ = flock(fd, LOCK_UN)
            return (false, nil)
        }
        return (true, readPID(fd))
    }

    /// The state directory whose lock file process `pid` has open, from `/proc/PID/fd`: what a `reload --pid`
    /// uses, so that it finds the daemon even when the edited config names another directory. Nil when `pid`
    /// has none open (not a relay, or not visible to this user).
    public static func directory(heldBy pid: Int32) -> String? {
        let fds = "/proc/\(pid)/fd"
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: fds) else { return nil }
        for entry in entries {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: fds + "/" + entry),
                target.hasSuffix("/" + fileName)
            else { continue }
            return String(target.dropLast(fileName.count + 1))
        }
        return nil
    }

    private static func readPID(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self)
        return Int32(text.split(whereSeparator: { $0 == "\n" || $0 == " " }).first ?? "")
    }
}
