import Foundation
import RelayCore
import RelayJSON
import Testing

/// The dead-letter filters and the chunked replay and purge the commands loop over.
@Suite struct DeadLetterFilterTests {
    static let t0 = Timestamp(millisecondsSinceEpoch: 1_714_521_600_000)

    /// 25 dead letters of "hook": 20 with a 410, 5 with a 500, one per second of dead-lettering.
    static func store(in directory: URL) async throws -> StateStore {
        let store = try StateStore.open(directory: directory.path)
        let events = (0..<25).map { n in
            RoutedEvent(
                event: Event(id: "e\(n)", time: t0.advanced(by: .milliseconds(Int64(n))), action: "a", timeValue: .string("t"),
                             fields: JSONObject(), raw: Array("{}".utf8)),
                subscriptions: ["hook"])
        }
        _ = try await store.enqueue(source: "acme", events: events, cursor: t0, now: t0)
        let rows = try await store.deliveries(subscription: "hook", due: t0, limit: 100, strict: false, excluding: [])
        try await store.record(rows.enumerated().map { index, row in
            let status = index < 20 ? 410 : 500
            return DeliveryOutcome(
                deliveries: [row], decision: .deadLetter(reason: "http_\(status)"), attemptedAt: t0.advanced(by: .seconds(Int64(index))),
                status: status, error: "http_\(status)", responseSnippet: [])
        })
        return store
    }

    @Test func filtersNarrowAndCombine() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dlf-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try await Self.store(in: directory)
        #expect(try await store.countDeadLetters(DeadLetterFilter()) == 25)
        #expect(try await store.countDeadLetters(DeadLetterFilter(status: 500)) == 5)
        #expect(try await store.countDeadLetters(DeadLetterFilter(reasonPrefix: "http_4")) == 20)
        #expect(try await store.countDeadLetters(DeadLetterFilter(reasonPrefix: "http_%")) == 0)
        #expect(try await store.countDeadLetters(DeadLetterFilter(subscriptions: ["hook", "other"])) == 25)
        #expect(try await store.countDeadLetters(DeadLetterFilter(subscriptions: [])) == 0)
        #expect(try await store.countDeadLetters(DeadLetterFilter(since: Self.t0.advanced(by: .seconds(10)), until: Self.t0.advanced(by: .seconds(15)))) == 5)
        #expect(try await store.deadLetters(DeadLetterFilter(limit: 3)).map(\.eventID) == ["e0", "e1", "e2"])
        #expect(!DeadLetterFilter().narrows && DeadLetterFilter(status: 1).narrows)
    }

    @Test func replayAndPurgeGoInChunksUntilNoneIsLeft() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dlf-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try await Self.store(in: directory)
        let now = Self.t0.advanced(by: .seconds(100))
        var chunks: [Int] = []
        var queued = 0
        while case let done = try await store.replayDeadLetters(DeadLetterFilter(status: 410), now: now, chunk: 8), done.taken > 0 {
            chunks.append(done.taken)
            queued += done.queued
        }
        #expect(chunks == [8, 8, 4])
        #expect(queued == 20)
        #expect(try await store.deadLetters().map(\.status) == Array(repeating: 500, count: 5))
        #expect(try await store.purgeDeadLetters(DeadLetterFilter(), chunk: 2) == 2)
        #expect(try await store.purgeDeadLetters(DeadLetterFilter(), chunk: 10) == 3)
        #expect(try await store.countDeadLetters(DeadLetterFilter()) == 0)
    }
}
