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
        let cancelled = StopSignal()
        let caller = Task {
            try await withQueryDeadline(.seconds(30), "a long call") {
                await hang.wait()
                if Task.isCancelled { cancelled.fire() }
                return 0
            }
        }
        caller.cancel()
        await cancelled.wait()
        #expect(cancelled.isFired)
        _ = await caller.result
    }
}
