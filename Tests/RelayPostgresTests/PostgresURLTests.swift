import Foundation
import Logging
import PostgresNIO
import RelayPostgres
import Testing

/// The connection URL an operator writes, as libpq takes it.
@Suite struct PostgresURLTests {
    @Test func aTCPURLWithTLSAndTimeouts() throws {
        let url = try PostgresURL("postgres://relay:s%40cret-Pass@db.example.com:6543/events?sslmode=verify-full&connect_timeout=5")
        #expect(url.configuration.host == "db.example.com" && url.configuration.port == 6543)
        #expect(url.configuration.username == "relay" && url.configuration.password == "s@cret-Pass")
        #expect(url.configuration.database == "events")
        #expect(url.tls == .required)
        #expect(url.configuration.options.connectTimeout == .seconds(5))
        #expect(url.description == "postgres://relay@db.example.com:6543/events", "no password in what is logged")
        let settings = Dictionary(uniqueKeysWithValues: url.configuration.options.additionalStartupParameters)
        #expect(settings["statement_timeout"] == "30000" && settings["idle_in_transaction_session_timeout"] == "5000")
        #expect(settings["application_name"] == "intilery-relay")
    }

    @Test func tlsAsTheURLAsksForIt() throws {
        let cases: [(String, PostgresURL.TLSUse)] = [
            ("", .none), ("?sslmode=disable", .none), ("?sslmode=prefer", .preferred), ("?sslmode=allow", .preferred),
            ("?sslmode=require", .required), ("?sslmode=verify-ca", .required),
        ]
        for (query, expected) in cases {
            #expect(try PostgresURL("postgresql://relay@db.example.com/events" + query).tls == expected, "\(query)")
        }
    }

    @Test func aUnixSocketIsNamedByItsDirectoryAsLibpqDoes() throws {
        let url = try PostgresURL("postgres://relay@/postgres?host=/run/postgresql&port=5433&statement_timeout=5000")
        #expect(url.configuration.unixSocketPath == "/run/postgresql/.s.PGSQL.5433")
        #expect(url.tls == .none)
        #expect(Dictionary(uniqueKeysWithValues: url.configuration.options.additionalStartupParameters)["statement_timeout"] == "5000")
        #expect(url.description == "postgres://relay@/run/postgresql (unix socket, port 5433)/postgres")
    }

    @Test func unusableURLsSayWhatIsWrongAndNeverShowThePassword() {
        let cases: [(String, String)] = [
            ("mysql://relay:hunter2@db/events", "must be a postgres:// or postgresql:// URL"),
            ("postgres://db.example.com/events", "names no user"),
            ("postgres://relay:hunter2@db.example.com:0/events", "has port 0, not a number from 1 to 65535"),
            ("postgres://relay:hunter2@db.example.com/events?sslmode=maybe", "has sslmode maybe, not one of"),
            ("postgres://relay:hunter2@db.example.com/events?connect_timeout=0", "has connect_timeout 0"),
            ("postgres://relay:hunter2@db.example.com/events?statement_timeout=soon", "has statement_timeout soon"),
            ("postgres://relay:hunter2@db.example.com/events?sslrootcert=/nonexistent.pem&sslmode=require", "has sslrootcert /nonexistent.pem"),
            ("postgres://relay:hunter2@db.example.com/events?pool=9", "has a parameter the relay does not know: pool"),
            ("postgres://relay:hunter2@/events", "names no host"),
        ]
        for (text, expected) in cases {
            #expect(throws: PostgresURLError.self, "\(text)") { try PostgresURL(text) }
            do {
                _ = try PostgresURL(text)
            } catch {
                #expect(error.description.contains(expected), "\(text): \(error)")
                #expect(!error.description.contains("hunter2"))
            }
        }
    }

    /// The settings reach the server: each connection starts with the statement timeout the URL asks for.
    @Test(.enabled(if: TestDatabase.available, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
    func theSettingsReachTheServer() async throws {
        let socket = URL(fileURLWithPath: try #require(TestDatabase.socket))
        let port = try #require(socket.lastPathComponent.split(separator: ".").last)
        let url = try PostgresURL("postgres://relay@/postgres?host=\(socket.deletingLastPathComponent().path)&port=\(port)&statement_timeout=1234")
        let client = PostgresClient(configuration: url.configuration, backgroundLogger: Logger(label: "test-postgres"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            let rows = try await client.query("SELECT current_setting('statement_timeout'), current_setting('application_name')")
            var settings: [(String, String)] = []
            for try await row in rows.decode((String, String).self) { settings.append(row) }
            #expect(settings.first?.0 == "1234ms")
            #expect(settings.first?.1 == "intilery-relay")
        }
    }
}
