import Foundation
import GRDB

#if canImport(Glibc)
import Glibc
#endif

/// The relay's durable state in one SQLite file (WAL, `synchronous=FULL`): per-source marks (live cursor, settle
/// mark, seen-id horizon), the ids a read may still return, the outbox of deliveries, and dead letters. Poller and
/// dispatchers meet only here.
public final class StateStore: Sendable {
    /// The database file's name inside the state directory.
    public static let fileName = "relay.sqlite"

    let pool: DatabasePool
    /// The state directory.
    public let directory: String
    /// Batch compositions waiting for their commit: see ``assignBatches(_:)``.
    let compositions = CompositionCommits()

    private init(pool: DatabasePool, directory: String) {
        self.pool = pool
        self.directory = directory
    }

    /// Opens (creating if need be) the store in `directory`: the directory 0700, the files 0600.
    /// `migrating: false` refuses a state that needs upgrading rather than upgrading it: what the state commands
    /// do while a daemon runs, which may be an older release that would then run on a schema it does not know.
    public static func open(directory: String, migrating: Bool = true) throws(StoreError) -> StateStore {
        try prepareDirectory(directory)
        let path = directory + "/" + fileName
        // Created here with 0600 so that SQLite, which gives -wal and -shm the main file's mode, never widens it.
        let fd = Glibc.open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .directory("cannot create \(path): \(String(cString: strerror(errno)))") }
        Glibc.close(fd)

        var configuration = Configuration()
        configuration.label = "intilery-relay"
        configuration.busyMode = .timeout(10)
        let pool: DatabasePool
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            // A state written by a newer release has tables this one does not know, and lacks ones it expects.
            if try pool.read(migrator.hasBeenSuperseded) {
                throw StoreError.directory(
                    "\(path) was written by a newer intilery-relay (its schema has changes this version does not know); run that version, or move the state aside")
            }
            if !migrating, try !pool.read(migrator.hasCompletedMigrations) {
                throw StoreError.directory(
                    "\(path) was written by an older intilery-relay, whose daemon is running: this version would upgrade the state under it; restart the daemon on this version (it upgrades the state), then run this command again")
            }
            try migrator.migrate(pool)
            // FULL: a commit returns once the WAL is on disk, so a power cut cannot take back an outcome or a cursor
            // already acted on. Set on the writer after the pool opens it: the pool's own WAL set-up runs after
            // `prepareDatabase` and sets NORMAL, which only syncs at checkpoints. Group commits keep the cost low.
            try pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = FULL") }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(error, doing: "opening \(path)")
        }
        return StateStore(pool: pool, directory: directory)
    }

    static func prepareDirectory(_ directory: String) throws(StoreError) {
        var info = stat()
        if stat(directory, &info) != 0 {
            guard errno == ENOENT else {
                throw .directory("cannot use \(directory): \(String(cString: strerror(errno)))")
            }
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw .directory("cannot create \(directory): \((error as NSError).localizedDescription)")
            }
        } else if info.st_mode & S_IFMT != S_IFDIR {
            throw .directory("\(directory) is not a directory")
        }
        // An existing directory is tightened too: the state holds event payloads.
        if chmod(directory, 0o700) != 0 && errno != EPERM {
            throw .directory("cannot set mode 0700 on \(directory): \(String(cString: strerror(errno)))")
        }
        guard access(directory, W_OK | X_OK) == 0 else {
            throw .directory("\(directory) is not writable: \(String(cString: strerror(errno)))")
        }
    }

    /// The `synchronous` level of the connection that commits (2 is FULL), read back from it.
    package func commitSynchronousLevel() async throws(StoreError) -> Int {
        do {
            return try await pool.writeWithoutTransaction { try Int.fetchOne($0, sql: "PRAGMA synchronous") ?? -1 }
        } catch {
            throw StoreError(error, doing: "reading the synchronous level")
        }
    }

    /// Runs a write transaction, mapping SQLite's errors to ``StoreError``.
    func write<T: Sendable>(_ what: @autoclosure () -> String, _ body: @escaping @Sendable (Database) throws -> T)
        async throws(StoreError) -> T
    {
        do {
            return try await pool.write(body)
        } catch {
            throw StoreError(error, doing: what())
        }
    }

    /// Runs a read, mapping SQLite's errors to ``StoreError``.
    func read<T: Sendable>(_ what: @autoclosure () -> String, _ body: @escaping @Sendable (Database) throws -> T)
        async throws(StoreError) -> T
    {
        do {
            return try await pool.read(body)
        } catch {
            throw StoreError(error, doing: what())
        }
    }

    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: cursors, seen ids, outbox, dead letters") { db in
            try db.execute(
                sql: """
                    CREATE TABLE cursor (
                        source TEXT PRIMARY KEY,
                        position INTEGER NOT NULL,
                        updated_at INTEGER NOT NULL,
                        last_poll_at INTEGER
                    );
                    CREATE TABLE seen (
                        source TEXT NOT NULL,
                        event_id TEXT NOT NULL,
                        event_time INTEGER NOT NULL,
                        PRIMARY KEY (source, event_id)
                    ) WITHOUT ROWID;
                    CREATE TABLE outbox (
                        id INTEGER PRIMARY KEY,
                        subscription TEXT NOT NULL,
                        event_id TEXT NOT NULL,
                        event_time INTEGER NOT NULL,
                        action TEXT NOT NULL,
                        time_value TEXT NOT NULL,
                        payload BLOB NOT NULL,
                        enqueued_at INTEGER NOT NULL,
                        next_attempt_at INTEGER NOT NULL,
                        attempts INTEGER NOT NULL DEFAULT 0,
                        first_attempt_at INTEGER,
                        last_attempt_at INTEGER,
                        last_status INTEGER,
                        last_error TEXT,
                        batch_id TEXT,
                        UNIQUE (subscription, event_id)
                    );
                    CREATE INDEX outbox_due ON outbox (subscription, next_attempt_at, event_time, id);
                    CREATE TABLE dead_letter (
                        id INTEGER PRIMARY KEY,
                        subscription TEXT NOT NULL,
                        event_id TEXT NOT NULL,
                        event_time INTEGER NOT NULL,
                        action TEXT NOT NULL,
                        time_value TEXT NOT NULL,
                        payload BLOB NOT NULL,
                        reason TEXT NOT NULL,
                        last_status INTEGER,
                        response_snippet BLOB,
                        attempts INTEGER NOT NULL,
                        first_attempt_at INTEGER,
                        last_attempt_at INTEGER,
                        dead_at INTEGER NOT NULL,
                        UNIQUE (subscription, event_id)
                    );
                    CREATE INDEX dead_letter_by_age ON dead_letter (dead_at);
                    CREATE TABLE delivery_stats (
                        subscription TEXT PRIMARY KEY,
                        delivered INTEGER NOT NULL DEFAULT 0,
                        last_success_at INTEGER,
                        last_failure_at INTEGER,
                        last_failure TEXT
                    );
                    """)
        }
        migrator.registerMigration("v2: settle mark, seen-id horizon, skipped events, seen ids by time") { db in
            // settled: every event before it was read at least `lookback` after its time. seen_horizon: seen ids are
            // complete from here on, and no read starts before it. Both NULL until the first start under v2, which
            // fills them from the config's lookback.
            try db.execute(
                sql: """
                    ALTER TABLE cursor ADD COLUMN settled INTEGER;
                    ALTER TABLE cursor ADD COLUMN seen_horizon INTEGER;
                    CREATE INDEX seen_by_time ON seen (source, event_time);
                    CREATE TABLE skipped (
                        source TEXT NOT NULL,
                        reason TEXT NOT NULL,
                        count INTEGER NOT NULL,
                        last_at INTEGER NOT NULL,
                        PRIMARY KEY (source, reason)
                    ) WITHOUT ROWID;
                    """)
        }
        migrator.registerMigration("v3: batch order; indexes for strict and batch reads") { db in
            // Every query on the delivery path uses an index: strict subscriptions read in event-time order, and
            // batches are read back whole, in the order of their first attempt.
            try db.execute(
                sql: """
                    ALTER TABLE outbox ADD COLUMN batch_seq INTEGER;
                    UPDATE outbox SET batch_seq = id WHERE batch_id IS NOT NULL;
                    CREATE INDEX outbox_in_time ON outbox (subscription, event_time, id);
                    CREATE INDEX outbox_batch ON outbox (subscription, batch_id, batch_seq) WHERE batch_id IS NOT NULL;
                    """)
            // A subscription paused after repeated dead letters, and a fingerprint of the webhook it was paused with
            // (a hash: the URL's path and the header values are secrets), so that a reload that changes it resumes.
            try db.execute(
                sql: """
                    CREATE TABLE subscription_pause (
                        subscription TEXT PRIMARY KEY,
                        reason TEXT NOT NULL,
                        paused_at INTEGER NOT NULL,
                        webhook TEXT NOT NULL
                    ) WITHOUT ROWID;
                    """)
        }
        migrator.registerMigration("v4: queue age; orphaned subscriptions") { db in
            // maxAge counts from when a row was queued, so that rows held back by an open breaker or a throttling
            // receiver expire too: the sweep reads them by age. An orphan is a name with queued rows or dead
            // letters that left the config; its rows are deleted `orphanRetention` after `since`.
            try db.execute(
                sql: """
                    CREATE INDEX outbox_by_age ON outbox (subscription, enqueued_at);
                    CREATE TABLE orphan (
                        subscription TEXT PRIMARY KEY,
                        since INTEGER NOT NULL
                    ) WITHOUT ROWID;
                    """)
        }
        migrator.registerMigration("v5: a cursor per subscription, queue depths") { db in
            // A subscription is current (fed by its source's shared poll), behind (it reads the API on its own from
            // `position`; the shared poll gives it only late events before `position`), or joining (fed by the
            // shared poll again, while it reads the events the poll saw before it joined, listed in join_tail).
            // queue_depth counts each subscription's outbox rows, kept by triggers, so that maxQueued costs a
            // lookup rather than a count.
            try db.execute(
                sql: """
                    CREATE TABLE subscription_cursor (
                        subscription TEXT PRIMARY KEY,
                        source TEXT NOT NULL,
                        state TEXT NOT NULL,
                        position INTEGER,
                        tail_until INTEGER,
                        reason TEXT,
                        since INTEGER
                    ) WITHOUT ROWID;
                    CREATE TABLE join_tail (
                        subscription TEXT NOT NULL,
                        event_id TEXT NOT NULL,
                        PRIMARY KEY (subscription, event_id)
                    ) WITHOUT ROWID;
                    CREATE TABLE queue_depth (
                        subscription TEXT PRIMARY KEY,
                        n INTEGER NOT NULL
                    ) WITHOUT ROWID;
                    INSERT INTO queue_depth (subscription, n) SELECT subscription, count(*) FROM outbox GROUP BY subscription;
                    CREATE TRIGGER outbox_depth_insert AFTER INSERT ON outbox BEGIN
                        INSERT INTO queue_depth (subscription, n) VALUES (NEW.subscription, 1)
                        ON CONFLICT (subscription) DO UPDATE SET n = n + 1;
                    END;
                    CREATE TRIGGER outbox_depth_delete AFTER DELETE ON outbox BEGIN
                        UPDATE queue_depth SET n = n - 1 WHERE subscription = OLD.subscription;
                    END;
                    """)
        }
        migrator.registerMigration("v6: replay requests") { db in
            // `intilery-relay replay` writes a request; the daemon's catch-up edge reads the range again from the
            // API for that subscription, moving `position` as it queues, and marks it done.
            try db.execute(
                sql: """
                    CREATE TABLE replay_request (
                        id INTEGER PRIMARY KEY,
                        subscription TEXT NOT NULL,
                        since INTEGER NOT NULL,
                        until INTEGER NOT NULL,
                        position INTEGER NOT NULL,
                        queued INTEGER NOT NULL DEFAULT 0,
                        requested_at INTEGER NOT NULL,
                        finished_at INTEGER
                    );
                    """)
        }
        migrator.registerMigration("v7: each payload stored once; small delivery rows") { db in
            // An event's bytes live once in `event`, whatever the number of subscriptions; `pending` counts the
            // delivery rows that still need them, and the row goes with the last. A queued delivery is three
            // integers (the subscription's key, the event's time and row), ordered for strict reads; one that has
            // been attempted, or composed into a batch, moves to `delivery_attempt` with its schedule. Ingest
            // writes one event row and one small row per subscription, and no index grows per delivery. Event ids
            // are never reused (AUTOINCREMENT), so that an id says which reads could have seen a row.
            try db.execute(
                sql: """
                    CREATE TABLE subscription_key (
                        id INTEGER PRIMARY KEY,
                        name TEXT NOT NULL UNIQUE
                    );
                    CREATE TABLE event (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        source TEXT NOT NULL,
                        event_id TEXT NOT NULL,
                        event_time INTEGER NOT NULL,
                        action TEXT NOT NULL,
                        time_value TEXT NOT NULL,
                        payload BLOB NOT NULL,
                        queued_at INTEGER NOT NULL,
                        pending INTEGER NOT NULL
                    );
                    CREATE UNIQUE INDEX event_by_id ON event (source, event_id);
                    CREATE INDEX event_by_age ON event (queued_at);
                    CREATE TABLE delivery (
                        subscription INTEGER NOT NULL,
                        event_time INTEGER NOT NULL,
                        event INTEGER NOT NULL,
                        PRIMARY KEY (subscription, event_time, event)
                    ) WITHOUT ROWID;
                    CREATE TABLE delivery_attempt (
                        subscription INTEGER NOT NULL,
                        event_time INTEGER NOT NULL,
                        event INTEGER NOT NULL,
                        next_attempt_at INTEGER NOT NULL,
                        attempts INTEGER NOT NULL,
                        first_attempt_at INTEGER,
                        last_attempt_at INTEGER,
                        last_status INTEGER,
                        last_error TEXT,
                        batch_id TEXT,
                        batch_seq INTEGER,
                        PRIMARY KEY (subscription, event_time, event)
                    ) WITHOUT ROWID;
                    CREATE INDEX delivery_attempt_due ON delivery_attempt (subscription, next_attempt_at);
                    CREATE INDEX delivery_attempt_batch ON delivery_attempt (subscription, batch_id, batch_seq)
                        WHERE batch_id IS NOT NULL;

                    INSERT INTO subscription_key (name) SELECT DISTINCT subscription FROM outbox ORDER BY subscription;
                    INSERT OR IGNORE INTO event (source, event_id, event_time, action, time_value, payload, queued_at, pending)
                        SELECT coalesce(c.source, ''), o.event_id, o.event_time, o.action, o.time_value, o.payload, o.enqueued_at, 0
                        FROM outbox o LEFT JOIN subscription_cursor c ON c.subscription = o.subscription ORDER BY o.id;
                    INSERT INTO delivery (subscription, event_time, event)
                        SELECT k.id, o.event_time, e.id FROM outbox o
                        JOIN subscription_key k ON k.name = o.subscription
                        LEFT JOIN subscription_cursor c ON c.subscription = o.subscription
                        JOIN event e ON e.source = coalesce(c.source, '') AND e.event_id = o.event_id
                        WHERE o.attempts = 0 AND o.batch_id IS NULL;
                    INSERT INTO delivery_attempt (subscription, event_time, event, next_attempt_at, attempts, first_attempt_at,
                            last_attempt_at, last_status, last_error, batch_id, batch_seq)
                        SELECT k.id, o.event_time, e.id, o.next_attempt_at, o.attempts, o.first_attempt_at, o.last_attempt_at,
                            o.last_status, o.last_error, o.batch_id, o.batch_seq FROM outbox o
                        JOIN subscription_key k ON k.name = o.subscription
                        LEFT JOIN subscription_cursor c ON c.subscription = o.subscription
                        JOIN event e ON e.source = coalesce(c.source, '') AND e.event_id = o.event_id
                        WHERE o.attempts > 0 OR o.batch_id IS NOT NULL;
                    CREATE TEMP TABLE event_refs (event INTEGER PRIMARY KEY, n INTEGER NOT NULL);
                    INSERT INTO event_refs SELECT event, count(*) FROM
                        (SELECT event FROM delivery UNION ALL SELECT event FROM delivery_attempt) GROUP BY event;
                    UPDATE event SET pending = coalesce((SELECT n FROM event_refs WHERE event_refs.event = event.id), 0);
                    DELETE FROM event WHERE pending = 0;
                    DROP TABLE event_refs;

                    DELETE FROM queue_depth;
                    INSERT INTO queue_depth (subscription, n)
                        SELECT k.name, count(*) FROM (SELECT subscription FROM delivery UNION ALL SELECT subscription FROM delivery_attempt) r
                        JOIN subscription_key k ON k.id = r.subscription GROUP BY k.name;
                    DROP TRIGGER outbox_depth_insert;
                    DROP TRIGGER outbox_depth_delete;
                    DROP TABLE outbox;
                    """)
        }
        migrator.registerMigration("v8: seen ids and stored events keyed by time first") { db in
            // Event ids are random (UUIDs): keyed by id, each insert and delete lands on its own B-tree page, and every
            // group commit wrote one WAL page per event and index. Keyed by (time, id) they land where the last ones
            // did, since events arrive in time order. One event id has one time, so the dedupe is the same; the
            // by-time index of seen ids is the key itself now.
            try db.execute(
                sql: """
                    CREATE TABLE seen_v8 (
                        source TEXT NOT NULL,
                        event_time INTEGER NOT NULL,
                        event_id TEXT NOT NULL,
                        PRIMARY KEY (source, event_time, event_id)
                    ) WITHOUT ROWID;
                    INSERT INTO seen_v8 (source, event_time, event_id) SELECT source, event_time, event_id FROM seen;
                    DROP TABLE seen;
                    ALTER TABLE seen_v8 RENAME TO seen;
                    DROP INDEX event_by_id;
                    CREATE UNIQUE INDEX event_by_time_id ON event (source, event_time, event_id);
                    """)
        }
        migrator.registerMigration("v9: the ids a replay has queued at its position") { db in
            // A replay going on from its position reads from just before it again; these ids, at exactly that
            // millisecond, were queued already (ReadBoundary). A JSON array.
            try db.execute(sql: "ALTER TABLE replay_request ADD COLUMN boundary_ids TEXT NOT NULL DEFAULT '[]'")
        }
        migrator.registerMigration("v10: the ids a catch-up has queued at its position") { db in
            // As a replay's (v9), kept with the position they were queued at: other paths move the position too.
            try db.execute(
                sql: """
                    ALTER TABLE subscription_cursor ADD COLUMN boundary_position INTEGER;
                    ALTER TABLE subscription_cursor ADD COLUMN boundary_ids TEXT NOT NULL DEFAULT '[]';
                    """)
        }
        migrator.registerMigration("v11: a composed batch is one row") { db in
            // See ComposedBatches: its never-attempted members stay in `delivery`. Batches composed by an older
            // version stay in `delivery_attempt`, where this one reads them as before.
            try db.execute(
                sql: """
                    CREATE TABLE composed_batch (
                        subscription INTEGER NOT NULL,
                        batch_id TEXT NOT NULL,
                        members BLOB NOT NULL,
                        PRIMARY KEY (subscription, batch_id)
                    ) WITHOUT ROWID;
                    """)
        }
        migrator.registerMigration("v12: event rows keep when they were stored; no index of queue times") { db in
            // The maxAge sweep found old rows through an index on queue time that every ingest and every removal
            // wrote, two B-tree changes per event for a read once a minute; it bisects the row ids by store time instead
            // (StateStore.firstEventStored). Rows stored before have 0, which keeps store times in id order (their
            // queue times are not: a row queued again moved its own) and never after their queue time.
            try db.execute(
                sql: """
                    ALTER TABLE event ADD COLUMN stored_at INTEGER NOT NULL DEFAULT 0;
                    DROP INDEX event_by_age;
                    """)
        }
        migrator.registerMigration("v13: never-attempted deliveries as a log per subscription") { db in
            // See SubscriptionLogs. `pending` now counts the rows of `delivery` and `delivery_attempt` only; rows queued
            // before stay in `delivery`. The event rows' index is by queue order, with the routing bits, so that a
            // log's reads and its mark's moves look at the index alone; the dedupe by (source, time, id) goes
            // through it too, a few rows a millisecond.
            try db.execute(
                sql: """
                    ALTER TABLE subscription_key ADD COLUMN log_source TEXT;
                    ALTER TABLE subscription_key ADD COLUMN log_slot INTEGER;
                    ALTER TABLE subscription_key ADD COLUMN log_time INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE subscription_key ADD COLUMN log_event INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE subscription_key ADD COLUMN log_done BLOB NOT NULL DEFAULT x'';
                    ALTER TABLE event ADD COLUMN routing INTEGER NOT NULL DEFAULT 0;
                    DROP INDEX event_by_time_id;
                    CREATE INDEX event_log ON event (source, event_time, id, routing);
                    """)
        }
        return migrator
    }()
}

extension StoreError {
    /// Maps a GRDB or system error, keeping SQLite's message but never SQL arguments (GRDB hides them by default).
    init(_ error: any Error, doing what: String) {
        if let error = error as? StoreError {
            self = error
        } else if error is CancellationError {
            self = .cancelled
        } else if let error = error as? DatabaseError {
            let message = "\(what): \(error.message ?? "SQLite error") (\(error.resultCode))"
            self = error.resultCode == .SQLITE_FULL ? .diskFull(message) : .io(message)
        } else {
            self = .io("\(what): \(error)")
        }
    }
}
