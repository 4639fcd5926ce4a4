import Foundation
import RelayCore
import RelayJSON
import RelayPostgres
import Testing

/// A store of `kind` holding 25 dead letters of "hook", the same on either store: e0–e19 died with a 410 (e0's
/// receiver answered "gone"), e20–e24 with a 500, attempted one a second from `t0`, each answer judged 250 ms later; each event is also queued for "other".
/// `due` lists the event ids due for a subscription now, as its deliverer would take them.
struct DeadLetterFixture {
    static let t0 = Timestamp(millisecondsSinceEpoch: 1_714_521_600_000)

    let store: any DeadLetterStore & OrphanStore
    let due: (String) async throws -> [String]

    static let events = (0..<25).map { n in
        let time = t0.advanced(by: .milliseconds(Int64(n)))
        return Event(
            id: "e\(n)", time: time, action: "click", timeValue: .string(time.iso8601), 
            raw: Array(#"{"eventID":"e\#(n)"}"#.utf8))
    }

    static func outcome(_ index: Int, _ deliveries: [Delivery]) -> DeliveryOutcome {
        let status = index < 20 ? 410 : 500
        // Judged 250 ms after the attempt started: the letter is dead from then.
        let attemptedAt = t0.advanced(by: .seconds(Int64(index)))
        var outcome = DeliveryOutcome(
            deliveries: deliveries, decision: .deadLetter(reason: "http_\(status)"), attemptedAt: attemptedAt,
            decidedAt: attemptedAt.advanced(by: .milliseconds(250)), status: status, error: "http_\(status)")
        if index == 0 { outcome.responseSnippet = Array("gone".utf8) }
        return outcome
    }

    static func with(_ kind: StoreKind, _ body: (DeadLetterFixture) async throws -> Void) async throws {
        switch kind {
        case .sqlite:
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("relay-dead-letters-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: directory) }
            let store = try StateStore.open(directory: directory.path)
            _ = try await store.enqueue(
                source: "acme", events: events.map { RoutedEvent(event: $0, subscriptions: ["hook", "other"]) }, cursor: t0, now: t0)
            let rows = try await store.deliveries(subscription: "hook", due: t0, limit: 100, strict: false, excluding: [])
            try await store.record(rows.enumerated().map { index, row in outcome(index, [row]) })
            try await body(DeadLetterFixture(store: store) { subscription in
                let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
                return try await store.deliveries(subscription: subscription, due: now, limit: 100, strict: false, excluding: []).map(\.eventID)
            })
        case .postgres:
            try await TestDatabase.withClient { client, schema in
                let database = TestDatabase.database(client, schema)
                try await PostgresSchema.migrate(database)
                let queue = PostgresDeliveries(database)
                _ = try await queue.queue(events, source: "acme", for: ["hook", "other"], now: t0)
                let claimed = try await queue.claim("hook", requests: 100, batchSize: 1, by: "relay-1", visibility: .seconds(300))
                _ = try await queue.record(
                    claimed.enumerated().map { index, request in ClaimedOutcome(token: request.token, outcome: outcome(index, request.deliveries)) },
                    now: t0)
                try await body(DeadLetterFixture(store: PostgresDeadLetters(database)) { subscription in
                    // Claimed by a second instance, in due order.
                    try await queue.claim(subscription, requests: 100, batchSize: 1, by: "relay-2", visibility: .seconds(300))
                        .map { $0.deliveries[0].eventID }
                })
            }
        }
    }
}

/// Every store the `dead-letters` commands act on keeps the same promises: the filters select the same letters,
/// a letter shows its event and the receiver's answer, a replay queues each letter's event again once and a purge
/// deletes exactly what it selects, both in chunks; a subscription that left the config keeps its rows as an
/// orphan until it comes back, is purged, or its retention passes.
@Suite struct DeadLetterStoreConformanceTests {
    static let t0 = DeadLetterFixture.t0

    @Test(arguments: StoreKind.available)
    func filtersNarrowAndCombine(_ kind: StoreKind) async throws {
        try await DeadLetterFixture.with(kind) { fixture in
            let store = fixture.store
            #expect(try await store.countDeadLetters(DeadLetterFilter()) == 25)
            #expect(try await store.countDeadLetters(DeadLetterFilter(status: 500)) == 5)
            #expect(try await store.countDeadLetters(DeadLetterFilter(reasonPrefix: "http_4")) == 20)
            #expect(try await store.countDeadLetters(DeadLetterFilter(reasonPrefix: "http_41")) == 20)
            // A prefix is text, not a pattern.
            #expect(try await store.countDeadLetters(DeadLetterFilter(reasonPrefix: "http_%")) == 0)
            #expect(try await store.countDeadLetters(DeadLetterFilter(subscriptions: ["hook", "other"])) == 25)
            #expect(try await store.countDeadLetters(DeadLetterFilter(subscriptions: [])) == 0)
            #expect(try await store.countDeadLetters(DeadLetterFilter(subscription: "other")) == 0)
            #expect(try await store.countDeadLetters(DeadLetterFilter(limit: 7)) == 7)
            let window = DeadLetterFilter(since: Self.t0.advanced(by: .seconds(10)), until: Self.t0.advanced(by: .seconds(15)))
            #expect(try await store.deadLetters(window).map(\.eventID) == ["e10", "e11", "e12", "e13", "e14"])
            #expect(try await store.deadLetters(DeadLetterFilter(status: 500, limit: 2)).map(\.eventID) == ["e20", "e21"])
            let listed = try await store.deadLetters(DeadLetterFilter(limit: 3))
            #expect(listed.map(\.eventID) == ["e0", "e1", "e2"])
            #expect(listed.allSatisfy { $0.subscription == "hook" && $0.attempts == 1 && $0.payload.isEmpty })
            #expect(!DeadLetterFilter().narrows && DeadLetterFilter(status: 1).narrows, "what purge without --all refuses")
        }
    }

    @Test(arguments: StoreKind.available)
    func oneIsShownWithItsEventAndTheReceiversAnswer(_ kind: StoreKind) async throws {
        try await DeadLetterFixture.with(kind) { fixture in
            let first = try #require(try await fixture.store.deadLetters(DeadLetterFilter(limit: 1)).first)
            let shown = try #require(try await fixture.store.deadLetter(id: first.id))
            #expect(shown.eventID == "e0" && shown.reason == "http_410" && shown.status == 410 && shown.attempts == 1)
            #expect(shown.eventTime == Self.t0 && shown.firstAttemptAt == Self.t0 && shown.lastAttemptAt == Self.t0)
            #expect(shown.deadAt == Self.t0.advanced(by: .milliseconds(250)))
            #expect(shown.responseSnippet == Array("gone".utf8))
            #expect(shown.payload == DeadLetterFixture.events[0].raw)
            #expect(try await fixture.store.deadLetter(id: -1) == nil)
        }
    }

    @Test(arguments: StoreKind.available)
    func replayAndPurgeGoInChunksAndQueueEachEventOnce(_ kind: StoreKind) async throws {
        try await DeadLetterFixture.with(kind) { fixture in
            let store = fixture.store
            let now = Self.t0.advanced(by: .seconds(100))
            var chunks: [Int] = []
            var queued = 0
            while case let done = try await store.replayDeadLetters(DeadLetterFilter(status: 410), now: now, chunk: 8), done.taken > 0 {
                chunks.append(done.taken)
                queued += done.queued
            }
            #expect(chunks == [8, 8, 4])
            #expect(queued == 20)
            #expect(try await store.deadLetters(DeadLetterFilter()).map(\.status) == Array(repeating: 500, count: 5))
            #expect(try await fixture.due("hook") == (0..<20).map { "e\($0)" })
            // "other" keeps its own 25, untouched.
            #expect(try await fixture.due("other").count == 25)
            #expect(try await store.purgeDeadLetters(DeadLetterFilter(), chunk: 2) == 2)
            #expect(try await store.purgeDeadLetters(DeadLetterFilter(limit: 10), chunk: 10) == 3)
            #expect(try await store.countDeadLetters(DeadLetterFilter()) == 0)
        }
    }

    @Test(arguments: StoreKind.available)
    func aSubscriptionHasRowsWhileAnythingOfItsIsStored(_ kind: StoreKind) async throws {
        try await DeadLetterFixture.with(kind) { fixture in
            let (hook, other, nobody) = (try await fixture.store.hasRows(of: "hook"), try await fixture.store.hasRows(of: "other"),
                                         try await fixture.store.hasRows(of: "nobody"))
            #expect(hook && other && !nobody)
            #expect(try await fixture.store.purgeDeadLetters(DeadLetterFilter(subscription: "hook"), chunk: nil) == 25)
            let hookAfterPurge = try await fixture.store.hasRows(of: "hook")
            #expect(!hookAfterPurge)
        }
    }

    /// A subscription that left the config is an orphan from the first time it is found missing: its rows are
    /// kept, counted, taken up again when the name comes back, and deleted once the retention has passed.
    @Test(arguments: StoreKind.available)
    func aRemovedSubscriptionIsAnOrphanUntilItsRetentionPassesOrItComesBack(_ kind: StoreKind) async throws {
        try await DeadLetterFixture.with(kind) { fixture in
            let store = fixture.store
            let t = Self.t0.advanced(by: .seconds(3600))
            let found = try await store.reconcileOrphans(current: ["hook"], now: t)
            #expect(found.orphans == [Orphan(subscription: "other", queued: 25, deadLetters: 0, since: t)] && found.readopted.isEmpty)
            let back = try await store.reconcileOrphans(current: ["hook", "other"], now: t.advanced(by: .seconds(1)))
            #expect(back.readopted == ["other"] && back.orphans.isEmpty)

            // Both gone: each an orphan since it was first found missing, not since the last look.
            let gone = t.advanced(by: .seconds(2))
            _ = try await store.reconcileOrphans(current: [], now: gone)
            let again = try await store.reconcileOrphans(current: [], now: gone.advanced(by: .seconds(60)))
            #expect(again.orphans == [
                Orphan(subscription: "hook", queued: 0, deadLetters: 25, since: gone), Orphan(subscription: "other", queued: 25, deadLetters: 0, since: gone),
            ])
            #expect(try await store.pruneOrphans(olderThan: .seconds(3600), now: gone.advanced(by: .seconds(1800))).isEmpty)
            #expect(try await store.pruneOrphans(olderThan: .seconds(3600), now: gone.advanced(by: .seconds(3601))) == ["hook", "other"])
            #expect(try await store.orphans().isEmpty)
            let (hook, other) = (try await store.hasRows(of: "hook"), try await store.hasRows(of: "other"))
            #expect(!hook && !other, "nothing of them is left")
            #expect(try await fixture.due("other").isEmpty)
        }
    }

    @Test(arguments: StoreKind.available)
    func purgingAnOrphanDeletesItsQueuedEventsAndDeadLetters(_ kind: StoreKind) async throws {
        try await DeadLetterFixture.with(kind) { fixture in
            _ = try await fixture.store.reconcileOrphans(current: [], now: Self.t0)
            let other = try await fixture.store.purgeOrphan("other")
            #expect(other.queued == 25 && other.deadLetters == 0)
            let hook = try await fixture.store.purgeOrphan("hook")
            #expect(hook.queued == 0 && hook.deadLetters == 25)
            #expect(try await fixture.store.orphans().isEmpty)
            #expect(try await fixture.store.countDeadLetters(DeadLetterFilter()) == 0)
        }
    }
}
