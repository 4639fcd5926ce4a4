import Foundation
import RelayCore
import RelayJSON
import Testing

@Suite struct StateStoreTests {
    static func temporaryDirectory() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("relay-store-\(UUID().uuidString)")
    }

    static func event(_ id: String, _ ms: Int64) -> Event {
        Event(id: id, time: Timestamp(millisecondsSinceEpoch: ms), action: "a", timeValue: .null, fields: JSONObject(), raw: Array("{\"id\":\"\(id)\"}".utf8))
    }

    @Test func directoryIs0700AndFiles0600() async throws {
        let directory = Self.temporaryDirectory().appendingPathComponent("nested/state")
        defer { try? FileManager.default.removeItem(at: directory.deletingLastPathComponent().deletingLastPathComponent()) }
        let store = try StateStore.open(directory: directory.path)
        _ = try await store.enqueue(
            source: "s", events: [RoutedEvent(event: Self.event("1", 1), subscriptions: ["sub"])],
            cursor: Timestamp(millisecondsSinceEpoch: 1), now: Timestamp(millisecondsSinceEpoch: 2))
        let attributes = try FileManager.default.attributesOfItem(atPath: directory.path)
        #expect((attributes[.posixPermissions] as? Int) == 0o700)
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        #expect(files.contains(StateStore.fileName))
        for file in files {
            let mode = try FileManager.default.attributesOfItem(atPath: directory.appendingPathComponent(file).path)[.posixPermissions]
            #expect((mode as? Int) == 0o600, "\(file)")
        }
    }

    @Test func unusableDirectoryIsAClearError() throws {
        let file = Self.temporaryDirectory()
        try Data("x".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        #expect {
            _ = try StateStore.open(directory: file.path)
        } throws: { error in
            "\(error)".contains("is not a directory")
        }
        #expect(throws: StoreError.self) { _ = try StateStore.open(directory: file.path + "/below") }
    }

    @Test func pageAndCursorCommitTogetherAndReReadsAreDropped() async throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let now = Timestamp(millisecondsSinceEpoch: 100)
        let first = try await store.enqueue(
            source: "s",
            events: [
                RoutedEvent(event: Self.event("a", 10), subscriptions: ["x", "y"]),
                RoutedEvent(event: Self.event("b", 20), subscriptions: []),
            ], cursor: Timestamp(millisecondsSinceEpoch: 20), now: now)
        #expect(first == EnqueueResult(newEvents: 2, duplicates: 0, queued: 2))
        let again = try await store.enqueue(
            source: "s",
            events: [
                RoutedEvent(event: Self.event("a", 10), subscriptions: ["x", "y"]),
                RoutedEvent(event: Self.event("c", 30), subscriptions: ["x"]),
            ], cursor: Timestamp(millisecondsSinceEpoch: 15), now: now)
        #expect(again == EnqueueResult(newEvents: 1, duplicates: 1, queued: 1))
        #expect(try await store.queuedEventIDs(subscription: "x") == ["a", "c"])
        #expect(try await store.queuedEventIDs(subscription: "y") == ["a"])
        // The cursor never moves back.
        #expect(try await store.cursor(of: "s") == Timestamp(millisecondsSinceEpoch: 20))
        // Another source's ids are its own.
        let other = try await store.enqueue(
            source: "t", events: [RoutedEvent(event: Self.event("a", 10), subscriptions: ["z"])],
            cursor: Timestamp(millisecondsSinceEpoch: 10), now: now)
        #expect(other.newEvents == 1)
        #expect(try await store.pruneSeen(source: "s", before: Timestamp(millisecondsSinceEpoch: 25)) == 2)
        #expect(try await store.seenCount(source: "s") == 1)
        #expect(try await store.seenCount(source: "t") == 1)
    }

    @Test func survivesReopeningTheFile() async throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        do {
            let store = try StateStore.open(directory: directory.path)
            _ = try await store.enqueue(
                source: "s", events: [RoutedEvent(event: Self.event("a", 10), subscriptions: ["x"])],
                cursor: Timestamp(millisecondsSinceEpoch: 10), now: Timestamp(millisecondsSinceEpoch: 11))
        }
        let reopened = try StateStore.open(directory: directory.path)
        #expect(try await reopened.cursor(of: "s") == Timestamp(millisecondsSinceEpoch: 10))
        #expect(try await reopened.queuedEventIDs(subscription: "x") == ["a"])
    }
}
