import Logging
import Synchronization

/// Commits delivery outcomes in groups: whatever arrived while the previous transaction ran goes in the next one,
/// so there is never one fsync per event. A busy writer also gathers: after a commit of at least
/// ``gatherAfter`` deliveries it waits ``gatherWindow`` for more before the next one: in a drain that halves the
/// commits and their syncs, and shares each commit's B-tree pages among more events. An idle writer commits at once,
/// so a quiet stream's outcomes, and what a kill -9 can make the relay send again, do not grow. An outcome waits at
/// most one commit plus the window (far under the 100 ms docs/architecture.md promises).
public final class OutcomeWriter: Sendable {
    private struct Pending {
        var outcomes: [DeliveryOutcome] = []
        var callbacks: [@Sendable () -> Void] = []
        var deliveries = 0
    }

    /// How long a busy writer waits for more outcomes before committing.
    public static var gatherWindow: Duration { .milliseconds(2) }
    /// A commit of at least this many deliveries makes the writer gather before the next one.
    public static var gatherAfter: Int { 32 }
    /// With this many deliveries pending, the writer commits without gathering.
    public static var gatherLimit: Int { 256 }

    private let store: StateStore
    private let pending = Mutex(Pending())
    private let arrived = WakeupSignal()
    /// Signalled after each commit, for whoever watches progress (tests, the demo's live view).
    public let committed = WakeupSignal()

    private let progress: ProgressMonitor?
    private let pause: @Sendable (Duration) async -> Void

    /// A writer into `store`; its commits are steps of `progress`, when given. `pause` is how it waits while
    /// gathering (tests replace it; a cancelled wait ends early and commits).
    public init(
        store: StateStore, progress: ProgressMonitor? = nil,
        pause: @escaping @Sendable (Duration) async -> Void = { try? await Task.sleep(for: $0) }
    ) {
        self.store = store
        self.progress = progress
        self.pause = pause
    }

    /// Queues an outcome; `committed` runs once it is durable.
    public func submit(_ outcome: DeliveryOutcome, committed: @escaping @Sendable () -> Void) {
        pending.withLock {
            $0.outcomes.append(outcome)
            $0.callbacks.append(committed)
            $0.deliveries += outcome.deliveries.count
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
            var lastCommit = 0
            while !stop.isFired && !Task.isCancelled {
                await arrived.wait()
                // A signal can outlive the outcomes it announced (a commit took them): nothing to do, still busy.
                let waiting = pending.withLock { $0.deliveries }
                guard waiting > 0 else { continue }
                if lastCommit >= Self.gatherAfter, waiting < Self.gatherLimit, !stop.isFired {
                    await pause(Self.gatherWindow)
                }
                lastCommit = try await flush()
            }
            try await flush()
        }
    }

    /// Commits everything submitted so far; returns how many deliveries that was.
    @discardableResult
    public func flush() async throws -> Int {
        let batch = pending.withLock { pending -> Pending in
            defer { pending = Pending() }
            return pending
        }
        guard !batch.outcomes.isEmpty else { return 0 }
        do {
            try await progress.step("outcome writer") { try await store.record(batch.outcomes) }
        } catch {
            // Not committed (a cancelled task, a full disk): back in front of the queue for the next flush, never lost.
            pending.withLock { pending in
                pending.outcomes.insert(contentsOf: batch.outcomes, at: 0)
                pending.callbacks.insert(contentsOf: batch.callbacks, at: 0)
                pending.deliveries += batch.deliveries
            }
            throw error
        }
        for callback in batch.callbacks { callback() }
        committed.signal()
        return batch.deliveries
    }
}
