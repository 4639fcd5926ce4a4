import Logging
import Synchronization

/// Commits delivery outcomes in groups: whatever arrived while the previous transaction ran goes in the next one,
/// so there is never one fsync per event, and an outcome waits at most one commit (far under SPEC.md's 100 ms).
public final class OutcomeWriter: Sendable {
    private struct Pending {
        var outcomes: [DeliveryOutcome] = []
        var callbacks: [@Sendable () -> Void] = []
    }

    private let store: StateStore
    private let pending = Mutex(Pending())
    private let arrived = WakeupSignal()
    /// Signalled after each commit, for whoever watches progress (tests, the demo's live view).
    public let committed = WakeupSignal()

    /// A writer into `store`.
    public init(store: StateStore) { self.store = store }

    /// Queues an outcome; `committed` runs once it is durable.
    public func submit(_ outcome: DeliveryOutcome, committed: @escaping @Sendable () -> Void) {
        pending.withLock {
            $0.outcomes.append(outcome)
            $0.callbacks.append(committed)
        }
        arrived.signal()
    }

    /// Commits until cancelled, then commits what is left. Throws the store's error (exit 74).
    public func run() async throws {
        while !Task.isCancelled {
            await arrived.wait()
            try await flush()
        }
        try await flush()
    }

    /// Commits everything submitted so far.
    public func flush() async throws {
        let batch = pending.withLock { pending -> Pending in
            defer { pending = Pending() }
            return pending
        }
        guard !batch.outcomes.isEmpty else { return }
        try await store.record(batch.outcomes)
        for callback in batch.callbacks { callback() }
        committed.signal()
    }
}
