import Synchronization

/// A callback set once (or replaced) and called from any thread.
///
/// The closure is kept inside a struct, never as the lock's value itself: a bare closure in a generic container
/// is re-abstracted on every `inout` access, and the write-back stores the wrapped closure, so each call through
/// `withLock { $0 }` added two thunks to what was stored. The chain grew by one link per call: memory that was
/// never freed and calls that got slower for as long as the process ran.
public final class CallbackSlot<Argument>: Sendable {
    private struct Callback {
        let call: @Sendable (Argument) -> Void
    }
    private let callback = Mutex<Callback?>(nil)

    /// An empty slot: calls do nothing until a callback is set.
    public init() {}

    /// Sets (or replaces) the callback.
    public func set(_ call: @escaping @Sendable (Argument) -> Void) {
        callback.withLock { $0 = Callback(call: call) }
    }

    /// Calls the callback, outside the lock, if one is set.
    public func callAsFunction(_ argument: Argument) {
        callback.withLock { $0 }?.call(argument)
    }
}
