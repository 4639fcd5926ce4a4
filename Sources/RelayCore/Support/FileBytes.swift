#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a file could not be read, in the system's words (`No such file or directory`, `Permission denied`).
public struct FileReadError: Error, Sendable, CustomStringConvertible {
    /// The path that was read.
    public let path: String
    /// `strerror` of the failure.
    public let reason: String

    public var description: String { "cannot read \(path): \(reason)" }
}

/// Reads whole files with POSIX calls, so that a failure carries errno's text rather than a generic error.
public enum FileBytes {
    /// The bytes of the file at `path`, refusing files over `limit` bytes.
    public static func read(_ path: String, limit: Int = 16 << 20) throws(FileReadError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileReadError(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw FileReadError(path: path, reason: String(cString: strerror(errno)))
            }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<count])
            if bytes.count > limit { throw FileReadError(path: path, reason: "larger than \(limit) bytes") }
        }
    }
}
