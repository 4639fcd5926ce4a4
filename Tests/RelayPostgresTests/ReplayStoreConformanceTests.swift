import Foundation
import RelayCore
import RelayJSON
import RelayPostgres
import Testing

/// A store of `kind` taking replays of source "acme" (on PostgreSQL, this instance holds its lease), and a way to
/// deliver everything queued for a subscription, as its deliverer would.
struct ReplayFixture {
    let store: any ReplayStore
    let deliverAll: (String) async throws -> Int

    static func with(_ kind: StoreKind, _ body: (ReplayFixture) async throws -> Void) async throws {
        switch kind {
        case .sqlite:
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("relay-replays-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: directory) }
            let store = try StateStore.open(directory: directory.path)
            try await body(ReplayFixture(store: store) { subscription in
                let due = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000) + 60_000)
                let rows = try await store.deliveries(subscription: subscription, due: due, limit: 1_000, strict: false, excluding: [])
                try await store.record(rows.map { DeliveryOutcome(deliveries: [$0], decision: .delivered, attemptedAt: due, status: 200) })
                return rows.count
            })
        case .postgres:
            try await TestDatabase.withClient { client, schema in
                let database = TestDatabase.database(client, schema)
                try await PostgresSchema.migrate(database)
                let store = PostgresSourceStore(database)
                let lease = try #require(
                    try await PostgresLeases(database).acquire(PostgresSourceStore.leaseKey(of: "acme"), for: "relay-1", ttl: .seconds(300)))
                store.hold(lease, for: "acme")
                let queue = PostgresDeliveries(database)
                try await body(ReplayFixture(store: store) { subscription in
                    let claimed = try await queue.claim(subscription, requests: 1_000, batchSize: 1, by: "relay-1", visibility: .seconds(300))
                    _ = try await queue.record(claimed.map { PostgresDeliveriesTests.outcome($0, .delivered) }, now: Self.t0)
                    return claimed.count
                })
            }
        }
    }

    static let t0 = Timestamp(millisecondsSinceEpoch: 1_714_521_600_000)

    /// An event `id` at `offset` ms from `t0`.
    static func event(_ id: String, at offset: Int64) -> Event {
        var event = events(0..<1)[0]
        (event.id, event.time) = (id, t0.advanced(by: .milliseconds(offset)))
        return event
    }

    /// A full page whose last millisecond, 3, has two events (e3, x3); the next page may hold more at 3.
    static let pageEndingInATie = [event("e0", at: 0), event("e1", at: 1), event("e2", at: 2), event("e3", at: 3), event("x3", at: 3)]

    /// The read going on from a millisecond before that page's end: y3, at the same millisecond, was not reached
    /// before; e2, e3 and x3 were.
    static let readAgainFromBeforeTheTie = [event("e2", at: 2), event("e3", at: 3), event("x3", at: 3), event("y3", at: 3), event("e4", at: 4), event("e5", at: 5)]

    /// `e0`, `e1`... a millisecond apart from `t0`.
    static func events(_ range: Range<Int>) -> [Event] {
        range.map { n in
            let time = t0.advanced(by: .milliseconds(Int64(n)))
            return Event(id: "e\(n)", time: time, action: "click", timeValue: .string(time.iso8601), 
                         raw: Array(#"{"eventID":"e\#(n)"}"#.utf8))
        }
    }
}

/// Every store a replay is recorded in and carried out on keeps the same promises: a request is pending until
/// finished, a page queues its events and moves the position in one step, a full queue stops it where it stands,
/// an event still queued is not queued twice, and a delivered one is queued again.
@Suite struct ReplayStoreConformanceTests {
    static let t0 = ReplayFixture.t0
    static func at(_ offset: Int64) -> Timestamp { t0.advanced(by: .milliseconds(offset)) }

    @Test(arguments: StoreKind.available)
    func aReplayQueuesItsRangeOnceStoppingAtAFullQueue(_ kind: StoreKind) async throws {
        try await ReplayFixture.with(kind) { fixture in
            let store = fixture.store
            let id = try await store.requestReplay(subscription: "a", since: Self.t0, until: Self.at(10), now: Self.at(100))
            let pending = try await store.pendingReplays(of: ["a", "b"])
            #expect(pending.map(\.id) == [id] && pending.first?.position == Self.t0 && pending.first?.queued == 0)
            #expect(try await store.pendingReplays(of: ["b"]).isEmpty)

            // A queue of at most 3: the fourth event finds it full, and the request stays there.
            let first = try await store.queueReplay(id, source: "acme", events: ReplayFixture.events(0..<5), through: Self.at(5), limit: 3, now: Self.at(100))
            #expect(first.queued == 3 && first.filled == ["a"])
            #expect(try await store.replayRequest(id)?.position == Self.at(3))
            #expect(try await store.queueDepth("a") == 3)

            // On from there with room; e0, before the position, was queued already and is not read as new.
            let second = try await store.queueReplay(
                id, source: "acme", events: ReplayFixture.events(0..<1) + ReplayFixture.events(3..<10), through: Self.at(10), limit: 100, now: Self.at(100))
            #expect(second.queued == 7 && second.duplicates == 0 && second.filled.isEmpty)
            #expect(try await store.queueDepth("a") == 10)

            // Delivered, then read again by a second replay: queued again.
            #expect(try await fixture.deliverAll("a") == 10)
            let again = try await store.requestReplay(subscription: "a", since: Self.t0, until: Self.at(10), now: Self.at(200))
            let third = try await store.queueReplay(again, source: "acme", events: ReplayFixture.events(0..<4), through: Self.at(10), limit: 100, now: Self.at(200))
            #expect(third.queued == 4)
            #expect(try await store.queueDepth("a") == 4)

            try await store.finishReplay(id, now: Self.at(300))
            let finished = try #require(try await store.replayRequest(id))
            #expect(finished.finishedAt == Self.at(300) && finished.queued == 10 && finished.position == Self.at(10))
            #expect(try await store.pendingReplays(of: ["a"]).map(\.id) == [again])
            #expect(try await store.replayRequest(-1) == nil)
        }
    }

    /// A replay goes on from its position by reading from just before it again (after a full page, a restart, a
    /// takeover). What it queued up to there, at the position's millisecond too, is not queued again even once
    /// delivered; what it had not reached, at that same millisecond, is.
    @Test(arguments: StoreKind.available)
    func aReplayGoingOnFromItsPositionQueuesNothingTwiceEvenOnceDelivered(_ kind: StoreKind) async throws {
        try await ReplayFixture.with(kind) { fixture in
            let store = fixture.store
            let id = try await store.requestReplay(subscription: "a", since: Self.t0, until: Self.at(10), now: Self.at(100))
            #expect(try await store.queueReplay(id, source: "acme", events: ReplayFixture.pageEndingInATie, through: Self.at(3), limit: 100, now: Self.at(100)).queued == 5)
            #expect(try await fixture.deliverAll("a") == 5)

            let next = try await store.queueReplay(id, source: "acme", events: ReplayFixture.readAgainFromBeforeTheTie, through: Self.at(10), limit: 100, now: Self.at(100))
            #expect(next.queued == 3, "y3, e4 and e5 only")
            #expect(try await store.queueDepth("a") == 3)
            let request = try #require(try await store.replayRequest(id))
            #expect(request.queued == 8 && request.position == Self.at(10))
        }
    }

    /// The same for a subscription behind, reading on its own: its catch-up goes on from its position without
    /// queueing again what it queued there, delivered or not.
    @Test(arguments: StoreKind.available)
    func aCatchUpGoingOnFromItsPositionQueuesNothingTwiceEvenOnceDelivered(_ kind: StoreKind) async throws {
        try await ReplayFixture.with(kind) { fixture in
            let store = try #require(fixture.store as? any SubscriptionCursorStore)
            var late = SubscriptionConfig(name: "a", source: "acme", webhook: WebhookConfig(url: "http://127.0.0.1:9/a"))
            late.startFrom = .time(Self.t0)
            let behind = try await store.registerSubscriptions([late], now: Self.at(1_000))
            #expect(behind.map(\.subscription) == ["a"])
            let first = try await store.queueCatchUp(subscription: "a", source: "acme", events: ReplayFixture.pageEndingInATie, through: Self.at(3), limit: 100, now: Self.at(1_000))
            #expect(first.queued == 5)
            #expect(try await fixture.deliverAll("a") == 5)

            let next = try await store.queueCatchUp(subscription: "a", source: "acme", events: ReplayFixture.readAgainFromBeforeTheTie, through: Self.at(10), limit: 100, now: Self.at(1_000))
            #expect(next.queued == 3, "y3, e4 and e5 only")
            #expect(try await store.queueDepth("a") == 3)
            #expect(try await store.subscriptionCursor("a")?.position == Self.at(10))
        }
    }
}
