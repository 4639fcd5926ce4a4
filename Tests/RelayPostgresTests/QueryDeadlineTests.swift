import RelayCore
import RelayPostgres
import Synchronization
import Testing

/// The deadline around every database call: the caller always gets control back.
struct QueryDeadlineTests {
    @Test func aCallThatNeverEndsIsGivenUpAndCancelled() async throws {
        let hang = WakeupSignal()
        let cancelled = StopSignal()
        await #expect(throws: QueryDeadlineExceeded.self) {
            try await withQueryDeadline(.milliseconds(50), "waiting for a connection") {
                // Never signalled: only a cancel ends the wait.
                await hang.wait()
                if Task.isCancelled { cancelled.fire() }
                return 0
            }
        }
        await cancelled.wait()
        #expect(cancelled.isFired, "the call left behind was cancelled")
    }

    @Test func aCallWithinItsDeadlineReturnsItsResultOrItsError() async throws {
        #expect(try await withQueryDeadline(.seconds(30), "a quick call") { 42 } == 42)
        struct Refused: Error {}
        await #expect(throws: Refused.self) { try await withQueryDeadline(.seconds(30), "a refused call") { () -> Int in throw Refused() } }
    }

    @Test func cancellingTheCallerCancelsTheCall() async throws {
        let hang = WakeupSignal()
        let entered = StopSignal()
        let cancelled = StopSignal()
        let caller = Task {
            try await withQueryDeadline(.seconds(30), "a long call") {
                entered.fire()
                await hang.wait()
                if Task.isCancelled { cancelled.fire() }
                return 0
            }
        }
        await entered.wait()
        caller.cancel()
        await cancelled.wait()
        #expect(cancelled.isFired)
        await #expect(throws: CancellationError.self) { try await caller.value }
    }
}

extension QueryDeadlineTests {
    /// postgres-nio leaves a query in flight running when its task is cancelled: the caller must not wait for it.
    @Test func aCancelledCallerGetsControlBackWhileTheCallIgnoresTheCancel() async throws {
        let deaf = DeafGate()
        let caller = Task {
            try await withQueryDeadline(.seconds(30), "a query on a closed connection") {
                await deaf.wait()
                return 0
            }
        }
        await deaf.waitUntilEntered()
        caller.cancel()
        await #expect(throws: CancellationError.self) { try await caller.value }
        #expect(!deaf.isOpen, "the caller returned while the call still ran")
        deaf.open()
    }

    @Test func aCallerCancelledBeforeItStartsNeverRunsTheCall() async throws {
        let ran = StopSignal()
        let caller = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await withQueryDeadline(.seconds(30), "a call too late to start") {
                ran.fire()
                return 0
            }
        }
        await #expect(throws: CancellationError.self) { try await caller.value }
        #expect(!ran.isFired)
    }
}

extension QueryDeadlineTests {
    /// A stop's last writes (outcomes, claims and leases given back) finish although their caller was cancelled.
    @Test func aCallThatMustFinishRunsOnUncancelledAndItsCallerWaits() async throws {
        let gate = DeafGate()
        let sawCancel = Mutex(false)
        let caller = Task {
            try await withQueryDeadline(.seconds(30), "recording outcomes", whenCancelled: .finish) {
                await gate.wait()
                sawCancel.withLock { $0 = Task.isCancelled }
                return 7
            }
        }
        await gate.waitUntilEntered()
        caller.cancel()
        gate.open()
        #expect(try await caller.value == 7, "the caller waited for the call and got its result")
        #expect(sawCancel.withLock { $0 } == false, "the call was not cancelled")
    }

    @Test func aCallThatMustFinishRunsEvenWhenItsCallerWasCancelledBeforeIt() async throws {
        let caller = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await withQueryDeadline(.seconds(30), "giving up a lease", whenCancelled: .finish) { 7 }
        }
        #expect(try await caller.value == 7)
    }

    @Test func aCallThatMustFinishIsStillGivenUpAtItsDeadline() async throws {
        let gate = DeafGate()
        await #expect(throws: QueryDeadlineExceeded.self) {
            try await withQueryDeadline(.milliseconds(50), "releasing claims", whenCancelled: .finish) {
                await gate.wait()
                return 0
            }
        }
        gate.open()
    }
}

/// A wait that ignores cancellation, as a postgres-nio query does; ended only by `open()`.
private final class DeafGate: Sendable {
    private struct State {
        var open = false
        var entered = false
        var waiter: CheckedContinuation<Void, Never>?
        var enteredWaiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())

    var isOpen: Bool { state.withLock { $0.open } }

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let (resumeNow, entered) = state.withLock { state -> (Bool, CheckedContinuation<Void, Never>?) in
                state.entered = true
                defer { state.enteredWaiter = nil }
                if !state.open { state.waiter = continuation }
                return (state.open, state.enteredWaiter)
            }
            entered?.resume()
            if resumeNow { continuation.resume() }
        }
    }

    func waitUntilEntered() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if !state.entered { state.enteredWaiter = continuation }
                return state.entered
            }
            if now { continuation.resume() }
        }
    }

    func open() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.open = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }
}
