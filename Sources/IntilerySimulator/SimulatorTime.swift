import Foundation
import Synchronization

/// The simulator's notion of now, in milliseconds since the epoch: the wall clock, or a manual one that tests
/// move by hand so that live events, late visibility and the rate limit need no real waiting.
public final class SimulatorTime: Sendable {
    private enum Source {
        case system
        case manual(Int64)
        case derived(@Sendable () -> Int64)
    }
    private let source: Mutex<Source>

    private init(_ source: Source) { self.source = Mutex(source) }

    /// The real wall clock.
    public static func system() -> SimulatorTime { SimulatorTime(.system) }

    /// A clock that stands still at `milliseconds` until advanced.
    public static func manual(at milliseconds: Int64) -> SimulatorTime { SimulatorTime(.manual(milliseconds)) }

    /// A clock that reads another one, such as the relay's test clock, so both sides of a test share one time.
    public static func derived(_ now: @escaping @Sendable () -> Int64) -> SimulatorTime { SimulatorTime(.derived(now)) }

    /// Milliseconds since the epoch.
    public var now: Int64 {
        source.withLock { source in
            switch source {
            case .system: return Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
            case .manual(let ms): return ms
            case .derived(let now): return now()
            }
        }
    }

    /// Moves a manual clock forward; does nothing to the system clock.
    public func advance(by duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        source.withLock { source in
            if case .manual(let now) = source { source = .manual(now + ms) }
        }
    }
}

/// SplitMix64: a small, fast, seedable generator, so that fault injection and event data repeat run to run.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// A generator that yields the same sequence for the same seed.
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
