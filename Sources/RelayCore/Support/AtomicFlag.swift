import Synchronization

/// A flag one task sets and another reads without waiting: that a child task's work has happened (a commit ended,
/// a lease was renewed), for its parent to see. Setting publishes what was written before it.
public final class AtomicFlag: Sendable {
    private let value = Atomic<Bool>(false)

    /// A flag that is not set.
    public init() {}

    public var isSet: Bool { value.load(ordering: .acquiring) }

    public func set() { value.store(true, ordering: .releasing) }

    public func clear() { value.store(false, ordering: .relaxed) }
}
