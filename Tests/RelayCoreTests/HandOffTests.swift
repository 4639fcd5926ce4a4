import Foundation
import GRDB
import IntilerySimulator
@testable import RelayCore
import RelayJSON
import Testing

/// Rows the poller has just committed go to a caught-up dispatcher in memory: sent without being read back from
/// the store, and never sent twice when a store read races the hand-over.
@Suite struct HandOffTests {
    /// Queues three events, overwrites their stored bytes, then hands them over as the poller does: the bodies
    /// that arrive say whether the dispatcher read the store.
    static func bodiesAfterTamperingWithTheStore(
        ordering: DeliveryOrdering, batchSize: Int = 1
    ) async throws -> (accepted: Bool, bodies: [String]) {
        try await withDelivery(autoAdvance: false) { fixture in
            let subscription = fixture.subscription("h") {
                $0.ordering = ordering
                $0.batchSize = batchSize
            }
            let dispatcher = fixture.dispatcher(subscription)
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await fixture.writer.run() }
                // A strict one never takes rows in memory; it starts once the bytes are overwritten, so that it
                // cannot have read them before.
                if ordering == .none {
                    group.addTask { try await dispatcher.run() }
                    try #require(await Self.parkedCaughtUp(dispatcher, fixture))
                }
                let (_, result) = try await fixture.enqueueResult(3, for: ["h"])
                let queue = try DatabaseQueue(path: fixture.store.directory + "/" + StateStore.fileName)
                try await queue.write { try $0.execute(sql: #"UPDATE event SET payload = CAST('{"tampered":true}' AS BLOB)"#) }
                if ordering == .strict { group.addTask { try await dispatcher.run() } }
                let accepted = dispatcher.handOff(result.handOff["h"] ?? []) == 3
                dispatcher.wakeup.signal()
                while try await !DispatcherTests.outboxEmpty("h")(fixture.store) { await fixture.writer.committed.wait() }
                group.cancelAll()
                return (accepted, fixture.receiver.record.requests(to: "/hooks/h").map { String(decoding: $0.body, as: UTF8.self) })
            }
        }
    }

    /// Waits until the dispatcher has read the (empty) store, so that it takes rows in hand, and is parked on the
    /// (manual) clock, so that no read of its own races what the test does next. False if it never gets there: one
    /// that takes nothing in hand.
    static func parkedCaughtUp(_ dispatcher: Dispatcher<TestClock>, _ fixture: DeliveryFixture) async -> Bool {
        let deadline = ContinuousClock.now.advanced(by: .seconds(20))
        while dispatcher.handOff([]) == nil || fixture.clock.sleeperCount == 0 {
            if ContinuousClock.now > deadline { return false }
            await Task.yield()
        }
        return true
    }

    @Test func aCaughtUpDispatcherSendsWhatItWasHandedWithoutReadingItBack() async throws {
        let (accepted, bodies) = try await Self.bodiesAfterTamperingWithTheStore(ordering: .none)
        #expect(accepted)
        #expect(bodies.count == 3)
        #expect(bodies.allSatisfy { $0.contains(#""eventID":"evt-"#) })
        // The control: a strict subscription takes nothing in memory and reads the store's (tampered) bytes.
        let (strictAccepted, strictBodies) = try await Self.bodiesAfterTamperingWithTheStore(ordering: .strict)
        #expect(!strictAccepted)
        #expect(strictBodies == Array(repeating: #"{"tampered":true}"#, count: 3))
    }

    @Test func aCaughtUpBatchDispatcherComposesWhatItWasHandedWithoutReadingItBack() async throws {
        let (accepted, bodies) = try await Self.bodiesAfterTamperingWithTheStore(ordering: .none, batchSize: 3)
        #expect(accepted)
        #expect(bodies.count == 1)
        let body = try #require(bodies.first)
        let items = try #require(try JSONParser.parse(Array(body.utf8)).arrayValue)
        #expect(items.compactMap { $0.objectValue?["eventID"]?.stringValue } == ["evt-0", "evt-1", "evt-2"])
    }

    /// A batch composed from rows in hand is stored before its first attempt, like one read from the store: a
    /// retry, and a new dispatcher (a restart), send the same members in the same order under the same id.
    @Test func aBatchComposedFromRowsInHandIsTheSameOnEveryAttempt() async throws {
        try await withDelivery(autoAdvance: false) { fixture in
            let subscription = fixture.subscription("b") { $0.batchSize = 4 }
            fixture.receiver.script("/hooks/b", [.status(503)], then: .ok)
            let first = fixture.dispatcher(subscription)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await fixture.writer.run() }
                group.addTask { try await first.run() }
                try #require(await Self.parkedCaughtUp(first, fixture))
                let (_, result) = try await fixture.enqueueResult(3, for: ["b"])
                #expect(first.handOff(result.handOff["b"] ?? []) == 3)
                first.wakeup.signal()
                #expect(await fixture.receiver.waitUntil { $0.requests(to: "/hooks/b").count == 1 })
                try await fixture.writer.flush()
                group.cancelAll()
            }
            // Queued later, with an earlier event time: a batch composed again would take it.
            try await fixture.enqueue(1, for: ["b"], startingAt: -5)
            fixture.clock.advance(by: .seconds(3_600))
            try await fixture.deliver([fixture.dispatcher(subscription)], until: DispatcherTests.outboxEmpty("b"))
            let requests = fixture.receiver.record.requests(to: "/hooks/b")
            #expect(requests.count == 3)
            #expect(requests[0].webhookID == requests[1].webhookID)
            #expect(requests[0].body == requests[1].body)
            #expect(BatchOrderTests.eventIDs(requests[1]) == ["evt-0", "evt-1", "evt-2"])
            #expect(BatchOrderTests.eventIDs(requests[2]) == ["evt--5"])
        }
    }

    /// A commit hands over up to ten pages at once. A batch dispatcher still holding the last commit's rows takes the
    /// next one in hand too, rather than leave it (and, no longer caught up, every commit after it) to be read back
    /// from the store: five subscriptions draining a backlog read most of their rows back that way.
    @Test func aBatchDispatcherTakesACommitOfTenPagesWhileItHoldsTheLast() async throws {
        try await withDelivery(autoAdvance: false) { fixture in
            let dispatcher = fixture.dispatcher(fixture.subscription("ten") { $0.batchSize = 50 })
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await fixture.writer.run() }
                group.addTask { try await dispatcher.run() }
                try #require(await Self.parkedCaughtUp(dispatcher, fixture))
                let (_, first) = try await fixture.enqueueResult(1_000, for: ["ten"])
                let (_, second) = try await fixture.enqueueResult(1_000, for: ["ten"], startingAt: 1_000)
                #expect(dispatcher.handOff(first.handOff["ten"] ?? []) == 1_000)
                #expect(dispatcher.handOff(second.handOff["ten"] ?? []) == 1_000)
                dispatcher.wakeup.signal()
                while try await !DispatcherTests.outboxEmpty("ten")(fixture.store) { await fixture.writer.committed.wait() }
                group.cancelAll()
            }
            let ids = fixture.receiver.record.requests(to: "/hooks/ten").flatMap(BatchOrderTests.eventIDs)
            #expect(ids.count == 2_000)
            #expect(Set(ids) == Set((0..<2_000).map { "evt-\($0)" }))
        }
    }

    /// Caught up, a dispatcher that has sent all it was handed waits for the next hand-over without reading the
    /// store: there is nothing there to send, and a commit handed over while a read runs is refused, after which it
    /// read commit after commit back from the store. Retries and rows other processes queue are read once a second
    /// (the manual clock does not get there).
    @Test(arguments: [1, 50])
    func aCaughtUpDispatcherWithNothingInHandDoesNotReadTheStore(batchSize: Int) async throws {
        try await withDelivery(autoAdvance: false) { fixture in
            let dispatcher = fixture.dispatcher(fixture.subscription("idle") { $0.batchSize = batchSize })
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await fixture.writer.run() }
                group.addTask { try await dispatcher.run() }
                try #require(await Self.parkedCaughtUp(dispatcher, fixture))
                let reads = dispatcher.queueReads
                for commit in 0..<5 {
                    let (_, result) = try await fixture.enqueueResult(50, for: ["idle"], startingAt: commit * 50)
                    #expect(dispatcher.handOff(result.handOff["idle"] ?? []) == 50, "commit \(commit)")
                    dispatcher.wakeup.signal()
                    while try await !DispatcherTests.outboxEmpty("idle")(fixture.store) { await fixture.writer.committed.wait() }
                }
                #expect(dispatcher.queueReads == reads)
                group.cancelAll()
            }
            let ids = fixture.receiver.record.requests(to: "/hooks/idle").flatMap {
                batchSize == 1 ? [(try? JSONParser.parse($0.body))?.objectValue?["eventID"]?.stringValue ?? ""] : BatchOrderTests.eventIDs($0)
            }
            #expect(ids.sorted() == (0..<250).map { "evt-\($0)" }.sorted())
        }
    }

    /// A caught-up dispatcher that looks for its next due row between the poller's commit and its hand-over finds
    /// the commit's rows in the store: it waits for the hand-over rather than take them for rows another process
    /// queued, which refused the hand-over and read the commit back.
    @Test func aCommitSeenBeforeItsHandOverIsStillTakenInHand() async throws {
        try await withDelivery(autoAdvance: false) { fixture in
            let dispatcher = fixture.dispatcher(fixture.subscription("between"))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await fixture.writer.run() }
                group.addTask { try await dispatcher.run() }
                try #require(await Self.parkedCaughtUp(dispatcher, fixture))
                let (reads, sleeps) = (dispatcher.queueReads, fixture.clock.sleeps.count)
                let (_, result) = try await fixture.enqueueResult(5, for: ["between"])
                // Woken with the rows committed and not handed over yet: it looks, finds them, and waits again.
                dispatcher.wakeup.signal()
                let deadline = ContinuousClock.now.advanced(by: .seconds(20))
                while fixture.clock.sleeps.count == sleeps || fixture.clock.sleeperCount == 0, ContinuousClock.now < deadline {
                    await Task.yield()
                }
                #expect(dispatcher.handOff(result.handOff["between"] ?? []) == 5)
                dispatcher.wakeup.signal()
                while try await !DispatcherTests.outboxEmpty("between")(fixture.store) { await fixture.writer.committed.wait() }
                #expect(dispatcher.queueReads == reads)
                group.cancelAll()
            }
            #expect(fixture.eventIDs(sentTo: "between").sorted() == (0..<5).map { "evt-\($0)" })
        }
    }

    @Test func rowsHandedOverAfterAReadCouldSeeThemAreLeftToTheStore() async throws {
        try await withDelivery(autoAdvance: false) { fixture in
            let dispatcher = fixture.dispatcher(fixture.subscription("late"))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await fixture.writer.run() }
                group.addTask { try await dispatcher.run() }
                try #require(await Self.parkedCaughtUp(dispatcher, fixture))
                // The commit's hand-over comes late: the dispatcher, caught up, waits for it only until its
                // once-a-second read from the queue's head, which reads these from the store, and sends them.
                let (_, result) = try await fixture.enqueueResult(5, for: ["late"])
                fixture.clock.advance(by: .seconds(1))
                dispatcher.wakeup.signal()
                while try await !DispatcherTests.outboxEmpty("late")(fixture.store) { await fixture.writer.committed.wait() }
                #expect((dispatcher.handOff(result.handOff["late"] ?? []) ?? 0) == 0)
                // A later commit's rows go, by hand-over or by the store, once.
                let (_, next) = try await fixture.enqueueResult(2, for: ["late"], startingAt: 5)
                dispatcher.handOff(next.handOff["late"] ?? [])
                dispatcher.wakeup.signal()
                while try await !DispatcherTests.outboxEmpty("late")(fixture.store) { await fixture.writer.committed.wait() }
                group.cancelAll()
            }
            let ids = fixture.eventIDs(sentTo: "late")
            #expect(ids.sorted() == (0..<7).map { "evt-\($0)" })
        }
    }

    @Test(arguments: [1, 10])
    func rowsHandedOverWhileTheStoreIsReadAreSentOnce(batchSize: Int) async throws {
        try await withDelivery(autoAdvance: false) { fixture in
            let subscription = fixture.subscription("once") {
                $0.concurrency = 16
                $0.batchSize = batchSize
            }
            let dispatcher = fixture.dispatcher(subscription)
            let total = 3_000
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await fixture.writer.run() }
                group.addTask { try await dispatcher.run() }
                // Pages of 100, each handed over at once, while the dispatcher reads and sends.
                for page in 0..<total / 100 {
                    let (_, result) = try await fixture.enqueueResult(100, for: ["once"], startingAt: page * 100)
                    dispatcher.handOff(result.handOff["once"] ?? [])
                    dispatcher.wakeup.signal()
                }
                while try await !DispatcherTests.outboxEmpty("once")(fixture.store) { await fixture.writer.committed.wait() }
                group.cancelAll()
            }
            let requests = fixture.receiver.record.requests(to: "/hooks/once")
            let ids = batchSize == 1 ? fixture.eventIDs(sentTo: "once") : requests.flatMap(BatchOrderTests.eventIDs)
            #expect(ids.count == total)
            #expect(Set(ids).count == total)
            #expect(requests.allSatisfy {
                batchSize == 1 || (1...batchSize).contains(BatchOrderTests.eventIDs($0).count)
            })
            #expect(try await fixture.store.queueCountProblems() == [])
        }
    }

    /// A finished request starts the next row in hand from the HTTP client's thread. A stop or a cancel in the
    /// middle of that must still leave nothing running after the run returns, and a second run sends the rest:
    /// each event once after a stop, at most one request per place again after a cancel.
    @Test(arguments: [false, true])
    func aStopOrCancelMidChainLeavesNoRequestBehind(cancelling: Bool) async throws {
        // The clock stands still, so that no due retry read ends a chain: only the signal may.
        try await withDelivery(autoAdvance: false) { fixture in
            let subscription = fixture.subscription("c") { $0.concurrency = 8 }
            // Quick answers until the signal's moment, slow ones after: the signal lands mid-chain even when a loaded
            // machine leaves the test's own task unscheduled for seconds (CI once saw all 3,000 sent first).
            let quick = ReceiverReply.status(200, after: .milliseconds(2))
            fixture.receiver.script("/hooks/c", Array(repeating: quick, count: 300), then: .status(200, after: .milliseconds(30)))
            let ids = try await fixture.enqueue(3_000, for: ["c"])
            let first = fixture.dispatcher(subscription)
            let stop = StopSignal()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await fixture.writer.run() }
                let loopThread = BlockableExecutor()
                let run = Task(executorPreference: loopThread) { try await first.run(stop: stop) }
                #expect(await fixture.receiver.waitUntil { $0.requests(to: "/hooks/c").count >= 300 })
                // A busy machine may not run the dispatcher's loop for a while after the signal. Holding its thread
                // for 100 ms from before the signal makes that certain: the HTTP client's thread, which chains the
                // next row without the loop, must see the signal by itself.
                loopThread.block(for: 0.1)
                if cancelling { run.cancel() } else { stop.fire() }
                // Read after the signal: what arrived between a read and the signal would count against it.
                let seenAtSignal = fixture.receiver.record.requests(to: "/hooks/c").count
                _ = await run.result
                #expect(first.requestsInFlight == 0)
                let seenAtReturn = fixture.receiver.record.requests(to: "/hooks/c").count
                #expect(seenAtReturn - seenAtSignal <= 8, "only requests in flight at the signal may arrive after it")
                try await fixture.writer.flush()
                let late = fixture.receiver.record.requests(to: "/hooks/c").count - seenAtReturn
                // A stop lets requests end, so none arrives later. A cancel aborts them, and bytes already on their
                // way may still arrive: one per place at most, never a new stream of them.
                #expect(cancelling ? late <= 8 : late == 0, "\(late) requests arrived after the run returned")
                group.cancelAll()
            }
            try await fixture.writer.flush()
            let sentFirst = Set(fixture.eventIDs(sentTo: "c"))
            #expect(sentFirst.count < ids.count, "the stop came after everything was sent: it tests nothing")
            fixture.receiver.script("/hooks/c", [], then: quick)

            try await fixture.deliver([fixture.dispatcher(subscription)]) { try await $0.queueDepth("c") == 0 }
            let all = fixture.eventIDs(sentTo: "c")
            #expect(Set(all) == Set(ids))
            // A cancel aborts requests mid-way (their rows stay queued and are sent again); a stop lets them end.
            if cancelling {
                #expect(all.count - ids.count <= 8, "at most one request per place is sent again")
            } else {
                #expect(all.count == ids.count, "each event once")
            }
            #expect(try await fixture.store.queueCountProblems() == [])
        }
    }
}

/// Runs its tasks on one thread that a test can hold, as a loaded machine would not schedule them.
final class BlockableExecutor: TaskExecutor, @unchecked Sendable {
    private let queue = DispatchQueue(label: "blockable-executor")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    /// Returns at once; the tasks queued from now on wait until `seconds` have passed.
    func block(for seconds: TimeInterval) {
        queue.async { Thread.sleep(forTimeInterval: seconds) }
    }
}
