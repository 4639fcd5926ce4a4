import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Child processes for the tests, started with posix_spawn. Foundation's `Process.run()` adds a close action for
/// every descriptor number up to the highest open one; with the 1,400-odd a parallel test run holds, that path
/// crashed the test process twice in CI (SIGSEGV in a memcpy). Here glibc closes them in the child (`closefrom`).
final class ChildProcess: Sendable {
    let pid: pid_t
    private let exitStatus = Mutex<Int32?>(nil)

    /// Starts `path` with `arguments` and `environment` (nil: this process's) in `directory`, with `stdin`, `stdout`
    /// and `stderr` as its standard descriptors (nil stdin: /dev/null).
    init(
        _ path: String, _ arguments: [String], environment: [String: String]?, directory: String?,
        stdin: Int32?, stdout: Int32, stderr: Int32
    ) throws {
        guard let closeFrom = Self.addCloseFrom, let changeDirectory = Self.addChangeDirectory else {
            throw CocoaError(.featureUnsupported, userInfo: [NSLocalizedDescriptionKey: "glibc without posix_spawn_file_actions_addclosefrom_np"])
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin {
            posix_spawn_file_actions_adddup2(&actions, stdin, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)
        _ = closeFrom(&actions, 3)
        if let directory { _ = changeDirectory(&actions, directory) }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let variables = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { variables.forEach { free($0) } }
        var pid: pid_t = 0
        let code = posix_spawn(&pid, path, &actions, nil, argv, variables)
        guard code == 0 else { throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO) }
        self.pid = pid
    }

    /// Runs `path` with its standard streams on /dev/null and waits; its exit status, or -1 if it could not start.
    static func runQuietly(_ path: String, _ arguments: [String]) -> Int32 {
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(devNull) }
        guard let child = try? ChildProcess(
            path, arguments, environment: nil, directory: nil, stdin: devNull, stdout: devNull, stderr: devNull)
        else { return -1 }
        return child.wait()
    }

    /// The exit status (the signal's number if a signal ended it), or nil while it runs.
    var status: Int32? {
        exitStatus.withLock { known in
            if let known { return known }
            var raw: Int32 = 0
            guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
            known = Self.decode(raw)
            return known
        }
    }

    var isRunning: Bool { status == nil }

    /// Blocks until it exits; its status.
    func wait() -> Int32 {
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) < 0 {
            // ECHILD: `status` reaped it meanwhile, and kept what it found.
            guard errno == EINTR else { return exitStatus.withLock { $0 } ?? -1 }
        }
        return exitStatus.withLock { known in
            known = known ?? Self.decode(raw)
            return known!
        }
    }

    private static func decode(_ raw: Int32) -> Int32 {
        raw & 0x7f == 0 ? (raw >> 8) & 0xff : raw & 0x7f
    }

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private typealias AddChangeDirectory = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
    // GNU extensions (glibc 2.34 and 2.29) that Swift's Glibc module does not show.
    private static let addCloseFrom: AddCloseFrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np")
        .map { unsafeBitCast($0, to: AddCloseFrom.self) }
    private static let addChangeDirectory: AddChangeDirectory? = dlsym(nil, "posix_spawn_file_actions_addchdir_np")
        .map { unsafeBitCast($0, to: AddChangeDirectory.self) }
}

/// A pipe whose ends close on exec. (Every child here closes what it was not given anyway; this keeps the ends out
/// of any other program started meanwhile.)
func closeOnExecPipe() throws -> (read: Int32, write: Int32) {
    var ends: [Int32] = [0, 0]
    guard pipe(&ends) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
    return (ends[0], ends[1])
}
