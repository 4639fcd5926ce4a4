import Logging
import Synchronization

/// Commits delivery outcomes in groups: whatever arrived while the previous transaction ran goes in the next one,
/// so there is never one fsync per event, and an outcome waits at most one commit (far under the 100 ms docs/architecture.md promises).
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

    private let progress: ProgressMonitor?

    /// A writer into `store`; its commits are steps of `progress`, when given.
    public init(store: StateStore, progress: ProgressMonitor? = nil) {
        self.store = store
        self.progress = progress
    }

    /// Queues an outcome; `committed` runs once it is durable.
    public func submit(_ outcome: DeliveryOutcome, committed: @escaping @Sendable () -> Void) {
        pending.withLock {
            $0.outcomes.append(outcome)
            $0.callbacks.append(committed)
        }
        arrived.signal()
    }

    /// Commits until `stop` fires, then commits what is left. A stop only ends the wait between commits, never a
    /// commit: cancelling one would roll back outcomes already taken off the pending list, and a stop or a reload
    /// would then send those deliveries again. Cancelling the task also ends it (tests). Throws the store's error
    /// (exit 74).
    public func run(until stop: StopSignal = StopSignal()) async throws {
        // One task for the whole run turns the stop into a wake-up: racing each wait against the stop cost two task
        // creations per commit, a thousand and more a second under load.
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [arrived] in
                await stop.wait()
                arrived.signal()
            }
            defer { group.cancelAll() }
            while !stop.isFired && !Task.isCancelled {
                await arrived.wait()
                try await flush()
            }
            try await flush()
        }
    }

    /// Commits everything submitted so far.
    public func flush() async throws {
        let batch = pending.withLock { pending -> Pending in
            defer { pending = Pending() }
            return pending
        }
        guard !batch.outcomes.isEmpty else { return }
        do {
            try await progress.step("outcome writer") { try await store.record(batch.outcomes) }
        } catch {
            // Not committed (a cancelled task, a full disk): back in front of the queue for the next flush, never lost.
            pending.withLock { pending in
                pending.outcomes.insert(contentsOf: batch.outcomes, at: 0)
                pending.callbacks.insert(contentsOf: batch.callbacks, at: 0)
            }
            throw error
        }
        for callback in batch.callbacks { callback() }
        committed.signal()
    }
}
