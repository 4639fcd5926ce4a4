import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// sd_notify(3) written against `$NOTIFY_SOCKET` directly: one datagram per message to a Unix socket (a path, or
/// an abstract name when it starts with `@`). Does nothing when not run by systemd.
public struct SystemdNotifier: Sendable {
    private let socketPath: String?

    /// A notifier for `$NOTIFY_SOCKET` in `environment`.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Whether systemd is listening.
    public var isEnabled: Bool { socketPath != nil }

    /// The watchdog period systemd asked for (`WATCHDOG_USEC`, for this process), if any.
    public static func watchdogInterval(environment: [String: String] = ProcessInfo.processInfo.environment) -> Duration? {
        guard let usec = environment["WATCHDOG_USEC"].flatMap(Int64.init), usec > 0 else { return nil }
        if let pid = environment["WATCHDOG_PID"].flatMap(Int32.init), pid != getpid() { return nil }
        return .microseconds(usec)
    }

    /// Sends `READY=1`.
    public func ready(status: String? = nil) { send(["READY=1"] + (status.map { ["STATUS=\($0)"] } ?? [])) }
    /// Sends `STATUS=`, one line.
    public func status(_ text: String) { send(["STATUS=\(text.replacingOccurrences(of: "\n", with: " "))"]) }
    /// Sends `WATCHDOG=1`.
    public func watchdog() { send(["WATCHDOG=1"]) }
    /// Sends `RELOADING=1` with `MONOTONIC_USEC`, as `Type=notify-reload` expects.
    public func reloading() {
        send(["RELOADING=1", "MONOTONIC_USEC=\(MonotonicClock.nanoseconds() / 1000)"])
    }
    /// Sends `STOPPING=1`.
    public func stopping() { send(["STOPPING=1"]) }

    /// Sends `STOPPING=1` and asks for `time` to stop (`EXTEND_TIMEOUT_USEC`, systemd 236 and later): a
    /// `shutdownGrace` longer than the unit's `TimeoutStopSec=` then never gets the relay killed mid-grace, while a
    /// relay that hangs is still killed after the unit's own limit.
    public func stopping(within time: Duration) {
        let (seconds, attoseconds) = time.components
        send(["STOPPING=1", "EXTEND_TIMEOUT_USEC=\(seconds * 1_000_000 + attoseconds / 1_000_000_000_000)"])
    }

    /// What the relay needs beyond `shutdownGrace` to stop: the last outcomes committed, the store closed.
    public static let stopMargin: Duration = .seconds(30)

    /// `TimeoutStopSec=` in the shipped unit (systemd/intilery-relay.service; a test holds them equal).
    public static let shippedUnitStopTimeout: Duration = .seconds(45)

    /// Sends one datagram; failures are ignored, as sd_notify does: the service must run without systemd.
    public func send(_ assignments: [String]) {
        guard let socketPath else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(socketPath.utf8)
        if pathBytes.first == UInt8(ascii: "@") { pathBytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else { return }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in pathBytes.enumerated() { raw[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count + (pathBytes.first == 0 ? 0 : 1))
        let message = assignments.joined(separator: "\n")
        _ = message.withCString { text in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, text, strlen(text), Int32(MSG_NOSIGNAL), $0, length)
                }
            }
        }
    }
}
