import CSQLiteSetup
import GRDB
import GRDBSQLite
import Foundation
import RelayCore
import RelayJSON
import Testing

@Suite struct StateStoreTests {
    static func temporaryDirectory() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("relay-store-\(UUID().uuidString)")
    }

    /// The state store's tables as the first release created them, for upgrade tests.
    static let firstReleaseSchema = """
        CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
        INSERT INTO grdb_migrations VALUES ('v1: cursors, seen ids, outbox, dead letters');
        CREATE TABLE cursor (source TEXT PRIMARY KEY, position INTEGER NOT NULL, updated_at INTEGER NOT NULL, last_poll_at INTEGER);
        CREATE TABLE seen (source TEXT NOT NULL, event_id TEXT NOT NULL, event_time INTEGER NOT NULL, PRIMARY KEY (source, event_id)) WITHOUT ROWID;
        CREATE TABLE outbox (id INTEGER PRIMARY KEY, subscription TEXT NOT NULL, event_id TEXT NOT NULL, event_time INTEGER NOT NULL,
            action TEXT NOT NULL, time_value TEXT NOT NULL, payload BLOB NOT NULL, enqueued_at INTEGER NOT NULL,
            next_attempt_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, first_attempt_at INTEGER,
            last_attempt_at INTEGER, last_status INTEGER, last_error TEXT, batch_id TEXT, UNIQUE (subscription, event_id));
        CREATE TABLE dead_letter (id INTEGER PRIMARY KEY, subscription TEXT NOT NULL, event_id TEXT NOT NULL,
            event_time INTEGER NOT NULL, action TEXT NOT NULL, time_value TEXT NOT NULL, payload BLOB NOT NULL,
            reason TEXT NOT NULL, last_status INTEGER, response_snippet BLOB, attempts INTEGER NOT NULL,
            first_attempt_at INTEGER, last_attempt_at INTEGER, dead_at INTEGER NOT NULL, UNIQUE (subscription, event_id));
        CREATE TABLE delivery_stats (subscription TEXT PRIMARY KEY, delivered INTEGER NOT NULL DEFAULT 0,
            last_success_at INTEGER, last_failure_at INTEGER, last_failure TEXT);
        """

    /// A state directory holding a store as the first release made it, with `rows` (SQL) in it.
    static func firstReleaseStore(with rows: String) async throws -> URL {
        let directory = temporaryDirectory()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let queue = try DatabaseQueue(path: directory.appendingPathComponent(StateStore.fileName).path)
        try await queue.write { try $0.execute(sql: firstReleaseSchema + "\n" + rows) }
        return directory
    }

    static func event(_ id: String, _ ms: Int64) -> Event {
        Event(id: id, time: Timestamp(millisecondsSinceEpoch: ms), action: "a", timeValue: .null, raw: Array("{\"id\":\"\(id)\"}".utf8))
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

    /// docs/architecture.md: a commit is on disk when it returns. The pool's WAL set-up quietly lowered this to
    /// NORMAL once, which syncs only at checkpoints; a power cut could then undo commits the relay had acted on.
    @Test func commitsAreSyncedToDiskBeforeTheyReturn() async throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        #expect(try await store.commitSynchronousLevel() == 2, "PRAGMA synchronous = FULL on the writing connection")
        // The state commands open the same file while a daemon runs: they commit the same way.
        let again = try StateStore.open(directory: directory.path, migrating: false)
        #expect(try await again.commitSynchronousLevel() == 2)
    }

    /// SQLite's memory statistics put one process-wide mutex around every allocation, which the writer and the
    /// readers contended for; they are off from the moment the binary loads, so no store ever runs with them.
    @Test func sqliteKeepsNoProcessWideMemoryStatistics() async throws {
        #expect(relay_sqlite_setup_result() == SQLITE_OK)
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let events = (0..<50).map { RoutedEvent(event: Self.event("evt-\($0)", 1_000 + Int64($0)), subscriptions: ["a"]) }
        _ = try await store.enqueue(source: "s", events: events, cursor: Timestamp(millisecondsSinceEpoch: 2_000), now: Timestamp(millisecondsSinceEpoch: 3_000))
        #expect(try await store.queueDepth("a") == 50)
        // Counted only while the statistics are on: SQLite has allocated plenty by now.
        #expect(sqlite3_memory_used() == 0)
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

    @Test func orphansAreFoundKeptReadoptedAndDeletedAfterTheirRetention() async throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let t0 = Timestamp(millisecondsSinceEpoch: 1_000_000)
        _ = try await store.enqueue(
            source: "s",
            events: [
                RoutedEvent(event: Self.event("a", 10), subscriptions: ["old", "kept"]),
                RoutedEvent(event: Self.event("b", 20), subscriptions: ["old", "gone"]),
            ], cursor: Timestamp(millisecondsSinceEpoch: 20), now: t0)
        let goneRows = try await store.deliveries(subscription: "gone", due: t0, limit: 10, strict: false, excluding: [])
        try await store.record(goneRows.map { DeliveryOutcome(deliveries: [$0], decision: .deadLetter(reason: "http_410"), attemptedAt: t0) })

        var found = try await store.reconcileOrphans(current: ["kept"], now: t0)
        #expect(found.orphans == [
            Orphan(subscription: "gone", queued: 0, deadLetters: 1, since: t0),
            Orphan(subscription: "old", queued: 2, deadLetters: 0, since: t0),
        ])
        // Found again later: still an orphan since the first time.
        found = try await store.reconcileOrphans(current: ["kept"], now: t0.advanced(by: .seconds(3600)))
        #expect(found.orphans.map(\.since) == [t0, t0])
        // "old" comes back: no longer an orphan, its rows its own again.
        found = try await store.reconcileOrphans(current: ["kept", "old"], now: t0.advanced(by: .seconds(7200)))
        #expect(found.readopted == ["old"])
        #expect(found.orphans.map(\.subscription) == ["gone"])

        let retention = Duration.seconds(7 * 86_400)
        #expect(try await store.pruneOrphans(olderThan: retention, now: t0.advanced(by: retention)).isEmpty)
        #expect(try await store.pruneOrphans(olderThan: retention, now: t0.advanced(by: retention + .seconds(1))) == ["gone"])
        #expect(try await store.orphans().isEmpty)
        #expect(try await store.hasRows(of: "gone") == false)
        #expect(try await store.hasRows(of: "old"))
        #expect(try await store.hasRows(of: "kept"))
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

    @Test func marksMoveOnlyForwardAndALiveWalkSettlesOnlyFromTheMark() async throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        func at(_ ms: Int64) -> Timestamp { Timestamp(millisecondsSinceEpoch: ms) }
        let first = try await store.initializeMarks(of: "s", at: at(1_000), lookback: .seconds(60), now: at(1_000))
        #expect(first == SourceMarks(live: at(1_000), settled: at(1_000), seenHorizon: at(999)))
        // Initializing again keeps what is stored.
        #expect(try await store.initializeMarks(of: "s", at: at(5_000), lookback: .seconds(60), now: at(5_000)) == first)

        // A walk that began after the settle mark leaves it: the range between was never read late enough.
        _ = try await store.enqueue(
            source: "s", events: [], advance: MarkAdvance(live: at(3_000), settled: at(2_500), settledOnlyFrom: at(1_500)),
            now: at(3_000))
        #expect(try await store.marks(of: "s") == SourceMarks(live: at(3_000), settled: at(1_000), seenHorizon: at(999)))
        // One that began at or before it moves it; nothing moves back.
        _ = try await store.enqueue(
            source: "s", events: [], advance: MarkAdvance(live: at(2_000), settled: at(2_500), settledOnlyFrom: at(999)),
            now: at(3_100))
        #expect(try await store.marks(of: "s") == SourceMarks(live: at(3_000), settled: at(2_500), seenHorizon: at(999)))
        _ = try await store.enqueue(source: "s", events: [], advance: MarkAdvance(settled: at(2_000)), now: at(3_200))
        #expect(try await store.marks(of: "s")?.settled == at(2_500))

        // Pruning keeps every id a read may return: from the earlier mark less a second, and the horizon is stored.
        _ = try await store.enqueue(
            source: "s", events: [RoutedEvent(event: Self.event("old", 1_400), subscriptions: []),
                                  RoutedEvent(event: Self.event("kept", 1_600), subscriptions: [])],
            advance: MarkAdvance(), now: at(3_300))
        #expect(try await store.pruneSeen(source: "s") == 1)
        #expect(try await store.marks(of: "s")?.seenHorizon == at(1_500))
        // The settle mark never passes the live cursor, even when told to follow a walk that began beyond it.
        try await store.advanceSettled(source: "s", to: at(9_000))
        #expect(try await store.marks(of: "s")?.settled == at(3_000))
    }

    @Test func aStateFromANewerReleaseIsRefusedAndLeftAsItIs() async throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try StateStore.open(directory: directory.path)
        let file = directory.appendingPathComponent(StateStore.fileName).path
        let queue = try DatabaseQueue(path: file)
        try await queue.write { try $0.execute(sql: "INSERT INTO grdb_migrations VALUES ('v99: from the future')") }
        try queue.close()
        #expect {
            _ = try StateStore.open(directory: directory.path)
        } throws: { error in
            "\(error)".contains("written by a newer intilery-relay") && "\(error)".contains(file)
        }
        // Nothing was changed: the newer release's mark is still there.
        let identifiers = try await DatabaseQueue(path: file).read { try String.fetchAll($0, sql: "SELECT identifier FROM grdb_migrations") }
        #expect(identifiers.contains("v99: from the future"))
    }

    /// A newer binary's status or dead-letters beside a running older daemon must not upgrade the state under it.
    @Test func stateCommandsDoNotUpgradeAStateWhileADaemonHoldsIt() async throws {
        let directory = try await Self.firstReleaseStore(with: "INSERT INTO cursor VALUES ('s', 100000, 100000, 100000);")
        defer { try? FileManager.default.removeItem(at: directory) }
        let lock = try StateDirectoryLock.acquire(directory: directory.path)
        #expect {
            _ = try StateStore.openExisting(directory: directory.path)
        } throws: { error in
            "\(error)".contains("was written by an older intilery-relay, whose daemon is running")
        }
        lock.release()
        // With no daemon, the state commands upgrade it as the daemon would.
        let store = try #require(try StateStore.openExisting(directory: directory.path))
        #expect(try await store.status(sources: ["s"], subscriptions: []).sources.first?.cursor != nil)
    }

    @Test func aStateFromBeforeTheSettleEdgeGetsItsMarksFromTheLookback() async throws {
        // The first release's schema, with a cursor in it.
        let directory = try await Self.firstReleaseStore(with: """
                INSERT INTO cursor VALUES ('s', 100000, 100000, 100000);
                INSERT INTO seen VALUES ('s', 'e1', 50000);
            """)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore.open(directory: directory.path)
        let marks = try await store.initializeMarks(
            of: "s", at: Timestamp(millisecondsSinceEpoch: 0), lookback: .seconds(60), now: Timestamp(millisecondsSinceEpoch: 200_000))
        // What the old polls re-read (cursor − lookback) counts as settled; the seen ids stay.
        #expect(marks == SourceMarks(
            live: Timestamp(millisecondsSinceEpoch: 100_000), settled: Timestamp(millisecondsSinceEpoch: 40_000),
            seenHorizon: Timestamp(millisecondsSinceEpoch: 39_999)))
        #expect(try await store.seenCount(source: "s") == 1)
    }
}
