import Foundation
import RelayCore
import Synchronization
import Testing

/// The outcome writer's group commits: after a large commit it gathers for a moment before the next one, so a
/// drain syncs less often; after a small one it commits at once, so a quiet stream's outcomes wait no longer.
@Suite struct OutcomeWriterTests {
    /// Stands in for the writer's wait while gathering: records each wait and runs what the test gives it there,
    /// as outcomes arriving during the window would.
    final class Pauses: Sendable {
        private let state = Mutex<(waits: [Duration], during: (@Sendable () async throws -> Void)?)>(([], nil))

        var waits: [Duration] { state.withLock { $0.waits } }

        func duringTheNextWait(_ body: @escaping @Sendable () async throws -> Void) { state.withLock { $0.during = body } }

        func pause(_ duration: Duration) async {
            let during = state.withLock { state in
                state.waits.append(duration)
                defer { state.during = nil }
                return state.during
            }
            try? await during?()
        }
    }

    /// Submits one delivered outcome per row; the stream yields once per outcome committed.
    static func submit(_ rows: ArraySlice<Delivery>, to writer: OutcomeWriter, at: Timestamp) -> AsyncStream<Void> {
        let (committed, continuation) = AsyncStream<Void>.makeStream()
        for row in rows {
            writer.submit(DeliveryOutcome(deliveries: [row], decision: .delivered, attemptedAt: at)) { continuation.yield() }
        }
        return committed
    }

    static func wait(_ committed: AsyncStream<Void>, for count: Int) async {
        var seen = 0
        for await _ in committed {
            seen += 1
            if seen == count { return }
        }
    }

    @Test func aBusyWriterGathersBeforeItsNextCommitAndAnIdleOneCommitsAtOnce() async throws {
        try await withDelivery { fixture in
            try await fixture.enqueue(100, for: ["g"])
            let rows = try await fixture.store.deliveries(subscription: "g", due: fixture.now, limit: 100, strict: false, excluding: [])
            #expect(rows.count == 100)
            let pauses = Pauses()
            let writer = OutcomeWriter(store: fixture.store, pause: { await pauses.pause($0) })
            // Submitted before the writer runs: its first commit carries all 40, and a first commit never waits.
            let first = Self.submit(rows[0..<40], to: writer, at: fixture.now)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await writer.run() }
                await Self.wait(first, for: 40)
                let afterFirst = try await fixture.store.queueDepth("g")
                #expect(afterFirst == 60)
                #expect(pauses.waits == [], "the writer's first commit waited")

                // After a commit of 40, the next outcome waits for the window, and what arrives meanwhile joins it.
                let joining = Mutex<AsyncStream<Void>?>(nil)
                pauses.duringTheNextWait {
                    let whileWaiting = try await fixture.store.queueDepth("g")
                    #expect(whileWaiting == 60, "committed before gathering")
                    joining.withLock { $0 = Self.submit(rows[41..<50], to: writer, at: fixture.now) }
                }
                await Self.wait(Self.submit(rows[40..<41], to: writer, at: fixture.now), for: 1)
                #expect(pauses.waits == [OutcomeWriter.gatherWindow])
                // Committed with the outcome that waited: all there once its callback ran.
                let afterGathering = try await fixture.store.queueDepth("g")
                #expect(afterGathering == 50)
                if let joined = joining.withLock({ $0 }) { await Self.wait(joined, for: 9) }

                // That commit carried 10, under `gatherAfter`: the next outcome is committed at once.
                await Self.wait(Self.submit(rows[50..<51], to: writer, at: fixture.now), for: 1)
                let afterIdle = try await fixture.store.queueDepth("g")
                #expect(afterIdle == 49)
                #expect(pauses.waits.count == 1, "an idle writer waited before committing")
                group.cancelAll()
            }
            #expect(try await fixture.store.queueCountProblems() == [])
        }
    }
}
