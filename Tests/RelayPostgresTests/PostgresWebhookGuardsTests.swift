import Logging
import PostgresNIO
import RelayPostgres
import Testing

/// A webhook's rate limit and breaker shared by instances, against a real PostgreSQL. Each instance is its own
/// ``PostgresWebhookGuards`` on the same schema, as separate processes would be.
@Suite(.enabled(if: TestDatabase.available, "needs RELAY_TEST_POSTGRES_SOCKET: run under scripts/with-postgres (make test does)"))
struct PostgresWebhookGuardsTests {
    let rule = PostgresWebhookGuards.BreakerRule(threshold: 3, initialInterval: .seconds(5), maximumInterval: .seconds(12), probeTimeout: .seconds(300))

    func withInstances(_ body: ([PostgresWebhookGuards], PostgresClient, String) async throws -> Void) async throws {
        try await TestDatabase.withClient { client, schema in
            try await PostgresSchema.migrate(TestDatabase.database(client, schema))
            let instances = (0..<3).map { _ in PostgresWebhookGuards(TestDatabase.database(client, schema)) }
            try await body(instances, client, schema)
        }
    }

    /// Moves `key`'s open interval or probe into the past, as time passing would on the database's clock.
    static func elapse(_ key: String, schema: String, _ client: PostgresClient) async throws {
        try await client.query(
            """
            UPDATE \(unescaped: schema).webhook_breaker
            SET open_until = open_until - interval '1 hour', probe_until = probe_until - interval '1 hour' WHERE key = \(key)
            """)
    }

    @Test func aRateLimitIsSharedNotMultipliedByTheInstances() async throws {
        try await withInstances { instances, _, _ in
            // A token every 100 s with a burst of 6, drawn by three instances in turn: the first six go at once, in
            // all. (So slow a rate that a loaded machine's seconds between calls refill next to nothing.)
            var waits: [Duration] = []
            for _ in 0..<3 {
                for instance in instances { waits.append(try await instance.reserve("https://hooks.example.com", rate: 0.01, burst: 6)) }
            }
            #expect(waits.prefix(6).allSatisfy { $0 == .zero }, "\(waits)")
            let owed = waits.dropFirst(6)
            #expect(owed.allSatisfy { $0 > .seconds(50) }, "beyond the burst every instance waits: \(waits)")
            #expect(owed.last! > .seconds(250), "three tokens in debt take about 300 s: \(waits)")
            #expect(try await instances[0].reserve("https://other.example.com", rate: 0.01, burst: 6) == .zero, "each webhook has its own bucket")
        }
    }

    @Test func failuresFromSeveralInstancesOpenTheBreakerForAllAndOneProbes() async throws {
        try await withInstances { instances, client, schema in
            let key = "https://down.example.com"
            #expect(try await instances[0].record(key, success: false, rule: rule) == nil)
            #expect(try await instances[1].record(key, success: false, rule: rule) == nil)
            #expect(try await instances[2].permission(key, rule: rule) == .send, "two failures of three: still closed")
            #expect(try await instances[2].record(key, success: false, rule: rule) == .opened(for: .seconds(5)))
            for instance in instances {
                guard case .wait(let wait) = try await instance.permission(key, rule: rule) else {
                    Issue.record("open for every instance")
                    continue
                }
                #expect(wait > .zero && wait <= .seconds(5))
            }
            #expect(try await instances[0].record(key, success: false, rule: rule) == nil, "a request sent before it opened: no news")

            // The interval passes: of three instances asking together, exactly one probes.
            try await Self.elapse(key, schema: schema, client)
            let permissions = try await withThrowingTaskGroup(of: PostgresWebhookGuards.Permission.self) { group in
                for instance in instances { group.addTask { try await instance.permission(key, rule: rule) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(permissions.filter { $0 == .probe }.count == 1, "\(permissions)")
            #expect(permissions.filter { $0 == .wait(.milliseconds(100)) }.count == 2, "\(permissions)")

            // The probe fails: open again, twice as long, then capped.
            #expect(try await instances[1].record(key, success: false, rule: rule) == .opened(for: .seconds(10)))
            try await Self.elapse(key, schema: schema, client)
            #expect(try await instances[2].permission(key, rule: rule) == .probe)
            #expect(try await instances[2].record(key, success: false, rule: rule) == .opened(for: .seconds(12)))

            // A prober that dies never reports: once its probe has had its time, another instance probes.
            try await Self.elapse(key, schema: schema, client)
            #expect(try await instances[0].permission(key, rule: rule) == .probe)
            #expect(try await instances[1].permission(key, rule: rule) == .wait(.milliseconds(100)))
            try await Self.elapse(key, schema: schema, client)
            #expect(try await instances[1].permission(key, rule: rule) == .probe)
            #expect(try await instances[1].record(key, success: true, rule: rule) == .closed)
            for instance in instances { #expect(try await instance.permission(key, rule: rule) == .send) }
            #expect(try await instances[0].record(key, success: false, rule: rule) == nil, "the count starts again")
        }
    }
}
