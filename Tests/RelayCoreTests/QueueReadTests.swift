import Foundation
import IntilerySimulator
import RelayCore
import RelayJSON
import Testing

/// Reads of a subscription's queue that go on from where the last one left off (`queuedFrom`), and the rows queued
/// before that point since: in the store, and through a dispatcher draining a backlog.
@Suite(.timeLimit(.minutes(2))) struct QueueReadTests {
    typealias Key = StateStore.QueuedKey

    static func ids(_ rows: [Delivery]) -> [String] { rows.map(\.eventID) }

    static func evt(_ range: Range<Int>) -> [String] { range.map { "evt-\($0)" } }

    @Test func aReadGoesOnAfterTheLastRowItReturnedOrExcluded() async throws {
        try await withDelivery { fixture in
            try await fixture.enqueue(30, for: ["s"])
            let store = fixture.store
            let first = try await store.readQueue(subscription: "s", due: fixture.now, limit: 10, strict: false, excluding: [])
            #expect(Self.ids(first.rows) == Self.evt(0..<10))
            let from = try #require(first.queuedFrom)
            #expect(from > Key(first.rows[9]) && from <= Key(eventTime: first.rows[9].eventTime.millisecondsSinceEpoch + 1, event: 0))
            // Three of the first ten still held; the read starts after them all the same.
            let held = Set(first.rows.prefix(3).map(\.id))
            let second = try await store.readQueue(
                subscription: "s", due: fixture.now, limit: 10, strict: false, excluding: held, queuedFrom: from)
            #expect(Self.ids(second.rows) == Self.evt(10..<20))
            // Rows held past the key are excluded there too, and the next key is after the last one looked at.
            let third = try await store.readQueue(
                subscription: "s", due: fixture.now, limit: 5, strict: false, excluding: Set(second.rows.map(\.id)),
                queuedFrom: from)
            #expect(Self.ids(third.rows) == Self.evt(20..<25))
            #expect(third.queuedFrom.map { $0 > Key(third.rows[4]) } == true)
        }
    }

    /// A read from the key does not look before it: rows queued there since are the caller's to point out.
    @Test func aReadFromTheKeyDoesNotLookBeforeIt() async throws {
        try await withDelivery { fixture in
            try await fixture.enqueue(20, for: ["s"])
            let store = fixture.store
            let first = try await store.readQueue(subscription: "s", due: fixture.now, limit: 10, strict: false, excluding: [])
            // An event visible late: queued now, before where reads go on.
            try await fixture.enqueue(1, for: ["s"], startingAt: -1_000)
            var held = Set(first.rows.map(\.id))
            let full = try await store.readQueue(
                subscription: "s", due: fixture.now, limit: 10, strict: false, excluding: held, queuedFrom: first.queuedFrom)
            #expect(Self.ids(full.rows) == Self.evt(10..<20))
            held.formUnion(full.rows.map(\.id))
            let after = try await store.readQueue(
                subscription: "s", due: fixture.now, limit: 10, strict: false, excluding: held, queuedFrom: full.queuedFrom)
            #expect(after.rows.isEmpty)
            #expect(after.queuedFrom == full.queuedFrom, "nothing after the key: it stays")
            let head = try await store.readQueue(subscription: "s", due: fixture.now, limit: 10, strict: false, excluding: held)
            #expect(Self.ids(head.rows) == ["evt--1000"])
            #expect(head.queuedFrom.map { $0 > Key(full.rows[9]) } == true, "every row up to the last was looked at")
        }
    }

    /// Due retries come first; when they fill the limit, the queued rows cut off are where the next read starts.
    @Test func queuedRowsCutOffByTheLimitAreWhereTheNextReadStarts() async throws {
        try await withDelivery { fixture in
            try await fixture.enqueue(10, for: ["s"])
            let store = fixture.store
            let tried = try await store.deliveries(subscription: "s", due: fixture.now, limit: 3, strict: false, excluding: [])
            try await store.record([
                DeliveryOutcome(deliveries: tried, decision: .retry(at: fixture.now), attemptedAt: fixture.now, status: 500)
            ])
            let read = try await store.readQueue(subscription: "s", due: fixture.now, limit: 5, strict: false, excluding: [])
            #expect(Self.ids(read.rows) == Self.evt(0..<3) + Self.evt(3..<5))
            let from = try #require(read.queuedFrom)
            let next = try await store.readQueue(
                subscription: "s", due: fixture.now, limit: 5, strict: false, excluding: Set(read.rows.map(\.id)), queuedFrom: from)
            #expect(Self.ids(next.rows) == Self.evt(5..<10))
            // A read of retries only, or of a strict queue, says nothing of where the next one starts.
            #expect(try await store.readQueue(
                subscription: "s", due: fixture.now, limit: 5, strict: false, excluding: [], retriesOnly: true).queuedFrom == nil)
            #expect(try await store.readQueue(subscription: "s", due: fixture.now, limit: 5, strict: true, excluding: []).queuedFrom == nil)
        }
    }

    /// A read from a key looks at no more than 65,536 of the source's rows: a selective subscription whose next row
    /// lies further on gets none, and the read says it was cut short, so that its dispatcher does not take itself
    /// for caught up (and wait for hand-overs) with rows still queued.
    @Test func aReadStoppedByItsScanBoundSaysItWasCutShort() async throws {
        try await withDelivery { fixture in
            try await fixture.enqueue(10, for: ["sel", "other"])
            let store = fixture.store
            let first = try await store.readQueue(subscription: "sel", due: fixture.now, limit: 10, strict: false, excluding: [])
            #expect(Self.ids(first.rows) == Self.evt(0..<10) && !first.cutShort)
            for chunk in 0..<7 { try await fixture.enqueue(10_000, for: ["other"], startingAt: 10 + chunk * 10_000) }
            try await fixture.enqueue(1, for: ["sel"], startingAt: 70_010)
            let held = Set(first.rows.map(\.id))
            let stopped = try await store.readQueue(
                subscription: "sel", due: fixture.now, limit: 10, strict: false, excluding: held, queuedFrom: first.queuedFrom)
            #expect(stopped.rows.isEmpty)
            #expect(stopped.cutShort)
            let next = try await store.readQueue(
                subscription: "sel", due: fixture.now, limit: 10, strict: false, excluding: held, queuedFrom: stopped.queuedFrom)
            #expect(Self.ids(next.rows) == ["evt-70010"])
            #expect(!next.cutShort)
        }
    }

    /// Who queues the late event, and whether the dispatcher's clock moves on.
    enum LateEvent: String, CaseIterable, CustomTestStringConvertible {
        /// Queued by another process: nothing tells the dispatcher.
        case byAnotherProcess
        /// As `byAnotherProcess`, and then a second passes.
        case byAnotherProcessThenASecondPasses
        /// Queued by the poller, which hands the rows over (refused: the dispatcher is behind).
        case byThePoller

        var testDescription: String { rawValue }
    }

    /// A dispatcher draining 1,000 events one at a time, with an event queued before where its reads go on while
    /// the 301st request is out. Reads go on from where the last left off: rows the poller queued lower that
    /// point, others are found by a read from the head a second (of the dispatcher's clock) after the last such
    /// read, rows in hand or not, or once nothing else is left. Every event goes once.
    @Test(arguments: LateEvent.allCases)
    func anEventQueuedBeforeWhereReadsGoOnIsSentOnce(_ late: LateEvent) async throws {
        try await withDelivery(autoAdvance: false) { fixture in
            // The 301st request is answered once the late event is queued (and the clock moved): while it is out.
            let gate = ReceiverGate()
            fixture.receiver.script("/hooks/s", Array(repeating: .ok, count: 300) + [.statusWhenOpened(200, gate: gate)])
            let subscription = fixture.subscription("s") { $0.concurrency = 1 }
            let backlog = try await fixture.enqueue(1_000, for: ["s"])
            let dispatcher = fixture.dispatcher(subscription)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await fixture.deliver([dispatcher], until: DispatcherTests.outboxEmpty("s")) }
                #expect(await fixture.receiver.waitUntil { $0.requests(to: "/hooks/s").count >= 301 })
                let (_, queued) = try await fixture.enqueueResult(1, for: ["s"], startingAt: -1_000)
                switch late {
                case .byAnotherProcess: break
                case .byAnotherProcessThenASecondPasses: fixture.clock.advance(by: .seconds(1))
                case .byThePoller: #expect(dispatcher.handOff(queued.handOff["s"] ?? []) == nil, "behind: left to the store")
                }
                #expect(fixture.receiver.record.requests(to: "/hooks/s").count == 301, "the 301st still out")
                gate.open()
                try await group.waitForAll()
            }
            let sent = fixture.eventIDs(sentTo: "s")
            #expect(sent.count == 1_001 && Set(sent) == Set(backlog + ["evt--1000"]), "each once")
            let position = try #require(sent.firstIndex(of: "evt--1000"))
            // Reads take 256 rows when the ones in hand run out: at 0, 256, 512 and 768.
            switch late {
            case .byAnotherProcess:
                #expect(position == 1_000, "the reads at 512 and 768 go on after the rows before it: \(position)")
            case .byAnotherProcessThenASecondPasses:
                #expect((301..<310).contains(position), "read from the head when the 301st is answered: \(position)")
            case .byThePoller:
                #expect(position == 512, "the read at 512 starts at it: \(position)")
            }
        }
    }
}
