import Foundation
import Logging
import PostgresNIO
import RelayPostgres
import Testing

/// A throwaway PostgreSQL cluster started by `scripts/with-postgres` (`make test` runs the suite inside one).
enum TestDatabase {
    static let socket = ProcessInfo.processInfo.environment["RELAY_TEST_POSTGRES_SOCKET"]
    static var available: Bool { socket != nil }

    /// A running client on the cluster, closed when `body` ends; each test works in a schema of its own.
    static func withClient<T>(_ body: (PostgresClient, String) async throws -> T) async throws -> T {
        let configuration = PostgresClient.Configuration(unixSocketPath: try #require(socket), username: "relay", password: nil, database: "postgres")
        let client = PostgresClient(configuration: configuration, backgroundLogger: Logger(label: "test-postgres"))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            let schema = "test_" + UUID().uuidString.prefix(8).lowercased()
            return try await body(client, schema)
        }
    }

    /// The parts of the store work in `schema` of the test cluster.
    static func database(_ client: PostgresClient, _ schema: String) -> RelayDatabase {
        RelayDatabase(client: client, schema: schema, logger: Logger(label: "test"))
    }

    /// Ends every lease on `key` now, as the TTL passing would: expiry is the database's clock, not the test's.
    static func expire(_ key: String, schema: String, _ client: PostgresClient) async throws {
        try await client.query(
            "UPDATE \(unescaped: schema).lease SET expires_at = now() - interval '1 second' WHERE key = \(key)")
    }
}

@Suite(.enabled(if: TestDatabase.available, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
struct PostgresLeasesTests {

    @Test func instancesStartingTogetherMigrateOnce() async throws {
        try await TestDatabase.withClient { client, schema in
            let applied = try await withThrowingTaskGroup(of: [Int].self) { group in
                for _ in 0..<6 { group.addTask { try await PostgresSchema.migrate(TestDatabase.database(client, schema)) } }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(applied == Array(1...PostgresSchema.latestVersion), "each version applied by exactly one instance")
            let rows = try await client.query("SELECT count(*) FROM \(unescaped: schema).migration")
            for try await count in rows.decode(Int.self) { #expect(count == PostgresSchema.latestVersion) }
        }
    }

    @Test func aSchemaFromANewerReleaseIsRefused() async throws {
        try await TestDatabase.withClient { client, schema in
            try await PostgresSchema.migrate(TestDatabase.database(client, schema))
            try await client.query("INSERT INTO \(unescaped: schema).migration (version) VALUES (\(PostgresSchema.latestVersion + 1))")
            await #expect(throws: PostgresSchema.NewerSchema.self) { try await PostgresSchema.migrate(TestDatabase.database(client, schema)) }
        }
    }

    @Test func oneHolderAtATimeAndATakeoverStepsTheEpoch() async throws {
        try await TestDatabase.withClient { client, schema in
            try await PostgresSchema.migrate(TestDatabase.database(client, schema))
            let leases = PostgresLeases(TestDatabase.database(client, schema))
            let first = try #require(try await leases.acquire("token-a", for: "relay-1", ttl: .seconds(300)))
            #expect(first.epoch == 1)
            #expect(try await leases.acquire("token-a", for: "relay-2", ttl: .seconds(300)) == nil, "held, so not taken")
            #expect(try await leases.renew(first, ttl: .seconds(300)))
            #expect(try await leases.acquire("token-b", for: "relay-2", ttl: .seconds(300))?.epoch == 1, "another key is free")

            try await TestDatabase.expire("token-a", schema: schema, client)
            let second = try #require(try await leases.acquire("token-a", for: "relay-2", ttl: .seconds(300)))
            #expect(second.epoch == 2)
            #expect(try await !leases.renew(first, ttl: .seconds(300)), "the former holder learns it has lost the key")

            try await leases.release(second)
            #expect(try await leases.acquire("token-a", for: "relay-3", ttl: .seconds(300))?.epoch == 3, "released: taken at once")
        }
    }

    @Test func aFormerHolderCanNeverMoveTheCursorAndItNeverMovesBack() async throws {
        try await TestDatabase.withClient { client, schema in
            try await PostgresSchema.migrate(TestDatabase.database(client, schema))
            let leases = PostgresLeases(TestDatabase.database(client, schema))
            let old = try #require(try await leases.acquire("acme", for: "relay-1", ttl: .seconds(300)))
            try await leases.advanceCursor(of: "acme", to: 100, by: old)

            try await TestDatabase.expire("acme", schema: schema, client)
            let new = try #require(try await leases.acquire("acme", for: "relay-2", ttl: .seconds(300)))
            try await leases.advanceCursor(of: "acme", to: 200, by: new)
            await #expect(throws: LeaseLost(key: "acme", epoch: old.epoch)) { try await leases.advanceCursor(of: "acme", to: 300, by: old) }
            try await leases.advanceCursor(of: "acme", to: 150, by: new)
            #expect(try await leases.cursor(of: "acme") == 200)
        }
    }

    /// A holder's long write (its fenced transaction open) does not hold up the holder's own renewal, or a slow page
    /// would cost the lease; and a takeover, once the lease has expired, waits for that write to commit.
    @Test func aLongWriteDelaysATakeoverButNotTheHoldersRenewal() async throws {
        try await TestDatabase.withClient { client, schema in
            try await PostgresSchema.migrate(TestDatabase.database(client, schema))
            let leases = PostgresLeases(TestDatabase.database(client, schema))
            let holder = try #require(try await leases.acquire("acme", for: "relay-1", ttl: .seconds(300)))
            let (inside, enter) = AsyncStream<Void>.makeStream()
            let (go, release) = AsyncStream<Void>.makeStream()
            // Within a deadline: the test cluster ends a transaction idle for 5 s, and postgres-nio (1.33 here) does
            // not answer a query sent on a connection the server has ended.
            let write = Task {
                try await withQueryDeadline(.seconds(10), "the long write") {
                    try await leases.fenced(by: holder) { connection in
                        enter.yield()
                        for await _ in go { break }
                        try await connection.query(
                            "INSERT INTO \(unescaped: schema).cursor (source, position, epoch, updated_at) VALUES ('acme', 500, \(holder.epoch), now())",
                            logger: Logger(label: "test"))
                    }
                }
            }
            for await _ in inside { break }

            let renewed = try await withQueryDeadline(.seconds(5), "renewing beside the write") { try await leases.renew(holder, ttl: .seconds(300)) }
            #expect(renewed)

            try await TestDatabase.expire("acme", schema: schema, client)
            let takeover = Task { try await leases.acquire("acme", for: "relay-2", ttl: .seconds(300)) }
            var waiting = 0
            let asked = ContinuousClock.now
            while waiting == 0, asked.duration(to: .now) < .seconds(3) {
                let rows = try await client.query(
                    """
                    SELECT count(*)::int FROM pg_stat_activity
                    WHERE wait_event_type = 'Lock' AND query LIKE \("%" + schema + ".lease%FOR UPDATE%")
                    """)
                for try await count in rows.decode(Int.self) { waiting = count }
            }
            #expect(waiting == 1, "the takeover waits for the write")
            release.yield()
            try await write.value
            #expect(try await takeover.value?.epoch == 2)
            #expect(try await leases.cursor(of: "acme") == 500, "the new holder starts from what the former one wrote")
        }
    }

    /// A holder frozen in the middle of committing a page (its transaction open, the lease row share-locked) makes a
    /// takeover wait. The relay's connections ask the server to end a transaction idle for
    /// ``PostgresURL/idleInTransactionTimeout``, so the wait is that long at most, and the frozen write, when it goes
    /// on, is refused. With the client as the relay builds it from its URL.
    @Test func aHolderFrozenMidCommitDelaysATakeoverByTheIdleTimeoutAtMost() async throws {
        let socket = URL(fileURLWithPath: try #require(TestDatabase.socket))
        let url = try PostgresURL("postgres://relay@/postgres?host=\(socket.deletingLastPathComponent().path)&port=\(socket.pathExtension)")
        let client = PostgresClient(configuration: url.configuration, backgroundLogger: Logger(label: "test-postgres"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            let schema = "test_" + UUID().uuidString.prefix(8).lowercased()
            try await PostgresSchema.migrate(TestDatabase.database(client, schema))
            let leases = PostgresLeases(TestDatabase.database(client, schema))
            // Held long enough for the writes below to find it held on a loaded machine (with 1 s, a CI run found it
            // gone before the first), and over well before the server ends the frozen transaction.
            let frozen = try #require(try await leases.acquire("acme", for: "relay-1", ttl: .seconds(3)))
            try await leases.advanceCursor(of: "acme", to: 100, by: frozen)
            let frozenAt = ContinuousClock.now
            // Within the relay's deadline, as every call of the relay is: postgres-nio (1.33 here) does not answer a query
            // sent on a connection the server has ended in the meantime.
            let frozenCommit = Task {
                try await withQueryDeadline(PostgresURL.idleInTransactionTimeout + .seconds(5), "the frozen commit") {
                    try await leases.fenced(by: frozen) { connection in
                        // Stopped after the lease check, for longer than the server lets a transaction idle.
                        try await Task.sleep(for: PostgresURL.idleInTransactionTimeout + .seconds(2))
                        try await connection.query("UPDATE \(unescaped: schema).cursor SET position = 999", logger: Logger(label: "test"))
                    }
                }
            }
            var taken: Lease?
            while taken == nil, frozenAt.duration(to: .now) < .seconds(25) {
                taken = try await leases.acquire("acme", for: "relay-2", ttl: .seconds(300))
            }
            let waited = frozenAt.duration(to: .now)
            #expect(taken?.epoch == 2, "taken over")
            #expect(waited < PostgresURL.idleInTransactionTimeout + .seconds(6), "the takeover waited \(waited)")
            let frozenResult = await frozenCommit.result
            #expect(throws: (any Error).self, "the frozen write is refused") { try frozenResult.get() }
            #expect(try await leases.cursor(of: "acme") == 100)
        }
    }
}

/// The pause before trying for a lease again: doubling while the database keeps failing, back to a second once a
/// renewal has gone through (a slow spell on CI once left a relay waiting 16 s between every try).
@Suite struct LeaseFailuresTests {
    @Test func failuresInARowDoubleThePauseAndARenewalStartsTheCountAgain() {
        var failures = LeaseFailures()
        #expect(failures.pause == nil)
        for _ in 0..<5 { failures.failed(afterRenewing: false) }
        #expect(failures.pause == .seconds(16))
        failures.lost(afterRenewing: false)
        #expect(failures.pause == .seconds(16), "a lease lost without a renewal changes nothing")
        failures.failed(afterRenewing: true)
        #expect(failures.pause == .seconds(1), "a failure after a renewal is a first one")
        failures.lost(afterRenewing: true)
        #expect(failures.pause == nil, "lost after a renewal: try again at once")
        for _ in 0..<10 { failures.failed(afterRenewing: false) }
        #expect(failures.pause == .seconds(30))
    }
}
