import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Stands in for systemd's `$NOTIFY_SOCKET`: a Unix datagram socket that publishes each sd_notify message, so tests
/// and benchmarks can await READY, RELOADING, WATCHDOG and STOPPING from a real relay process.
public final class NotifyListener: Sendable {
    /// The socket's path, for `NOTIFY_SOCKET`.
    public let path: String
    /// Every message, in arrival order; finishes when the listener is closed.
    public let messages: AsyncStream<String>
    private let fd: Int32

    /// Binds `directory/notify.sock`.
    public init(directory: URL) throws {
        path = directory.appendingPathComponent("notify.sock").path
        let socketFD = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw POSIXError(.ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (index, byte) in bytes.enumerated() { raw[index] = byte } }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketFD, $0, length) }
        }
        guard bound == 0 else {
            Glibc.close(socketFD)
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        fd = socketFD
        let (messages, sink) = AsyncStream.makeStream(of: String.self)
        self.messages = messages
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(socketFD, &buffer, buffer.count, 0)
                if count <= 0 { break }
                sink.yield(String(decoding: buffer[0..<count], as: UTF8.self))
            }
            sink.finish()
        }
    }

    /// Stops listening and finishes ``messages``.
    public func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }
}
