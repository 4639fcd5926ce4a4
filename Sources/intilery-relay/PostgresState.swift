import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import RelayCore
import RelayJSON
import RelayPostgres

/// The store's URL as the relay connects with it; exits 78 naming the file and what is wrong (never the password).
func postgresURL(_ postgres: PostgresStoreConfig, configFile: String) throws -> PostgresURL {
    do {
        return try PostgresURL(postgres.url.exposedValue)
    } catch {
        printToStandardError("intilery-relay: \(configFile): store.postgres.url: \(error)")
        throw ExitStatus.configError
    }
}

/// Runs `body` on the PostgreSQL schema a config names, for the commands that read the state. Exits 78 for a bad
/// URL, 66 when the relay has never run on that schema, 74 when the database cannot be reached or fails.
func withPostgresState<T: Sendable>(
    _ postgres: PostgresStoreConfig, configFile: String, _ body: (RelayDatabase) async throws -> T
) async throws -> T {
    let url = try postgresURL(postgres, configFile: configFile)
    var logger = Logger(label: "intilery-relay")
    logger.logLevel = .critical
    let client = PostgresClient(configuration: url.configuration, backgroundLogger: logger)
    do {
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            let database = RelayDatabase(client: client, schema: postgres.schema, logger: logger)
            let rows = try await client.query("SELECT to_regclass(\(postgres.schema + ".migration"))::text", logger: logger)
            var migrated = false
            for try await name in rows.decode(String?.self) { migrated = name != nil }
            guard migrated else {
                printToStandardError("intilery-relay: no state in PostgreSQL schema \(postgres.schema) (\(url)): the relay has not run on it")
                throw ExitStatus.noSuchState
            }
            return try await body(database)
        }
    } catch let exit as ExitCode {
        throw exit
    } catch {
        // The URL's description leaves the password out; so does the error.
        printToStandardError("intilery-relay: PostgreSQL (\(url)): \(String(reflecting: error))")
        throw ExitStatus.ioError
    }
}

/// `status` on PostgreSQL: each source's marks and which instance polls it, each subscription's queue, dead
/// letters and what each instance has in flight.
struct PostgresStatusReport: Sendable {
    struct Source: Sendable {
        var name: String
        var marks: SourceMarks?
        var holder: PostgresStatus.Holder?
    }

    struct Subscription: Sendable {
        var name: String
        var pending: Int
        var deadLetters: Int
        var inFlight: [PostgresStatus.InFlight]
        var pause: SubscriptionPause?
    }

    var sources: [Source]
    var subscriptions: [Subscription]
    /// Names with rows that the config no longer has.
    var orphans: [Orphan]
    var orphanRetention: Duration

    static func read(_ database: RelayDatabase, config: RelayConfig) async throws -> PostgresStatusReport {
        let status = PostgresStatus(database)
        let ingest = PostgresIngest(database)
        let holders = try await status.holders()
        var sources: [Source] = []
        for source in config.sources {
            let key = PostgresSourceStore.leaseKey(of: source.name, among: config.sources)
            let holder = holders.first { $0.key == key && $0.expiresIn != nil }
            sources.append(Source(name: source.name, marks: try await ingest.marks(of: source.name), holder: holder))
        }
        let (queues, inFlight) = (try await status.queueGauges(), try await status.inFlight())
        var subscriptions: [Subscription] = []
        for subscription in config.subscriptions {
            subscriptions.append(
                Subscription(
                    name: subscription.name, pending: queues[subscription.name]?.pending ?? 0, deadLetters: queues[subscription.name]?.deadLetters ?? 0,
                    inFlight: inFlight.filter { $0.subscription == subscription.name }, pause: try await PostgresPauses(database).pause(of: subscription.name)))
        }
        // As the instances recorded them, less any name this config has brought back (taken up at the next reload).
        let current = Set(config.subscriptions.map(\.name))
        let orphans = try await PostgresOrphans(database).orphans().filter { !current.contains($0.subscription) }
        return PostgresStatusReport(sources: sources, subscriptions: subscriptions, orphans: orphans, orphanRetention: config.orphanRetention)
    }

    func text(now: Timestamp) -> [String] {
        var lines: [String] = []
        for source in sources {
            guard let marks = source.marks else {
                lines.append("source \(source.name): not polled yet")
                continue
            }
            let lag = DurationText.format(.seconds(max(0, (now.millisecondsSinceEpoch - marks.live.millisecondsSinceEpoch) / 1000)))
            var line = "source \(source.name): cursor \(marks.live.iso8601), lag \(lag), settled through \(marks.settled.iso8601)"
            if let holder = source.holder {
                line += "; polled by \(holder.holder) (epoch \(holder.epoch), lease for \(LogSeconds(holder.expiresIn ?? .zero)) s more)"
            } else {
                line += "; no instance holds its lease"
            }
            lines.append(line)
        }
        for subscription in subscriptions {
            var line = "subscription \(subscription.name): \(subscription.pending) pending, \(subscription.deadLetters) dead letters"
            if subscription.inFlight.isEmpty {
                line += ", none in flight"
            } else {
                line += "; in flight: " + subscription.inFlight.map { "\($0.instance) \($0.requests) requests (\($0.deliveries) events)" }
                    .joined(separator: ", ")
            }
            if let pause = subscription.pause { line += "; PAUSED since \(pause.since.iso8601): \(pause.reason)" }
            lines.append(line)
        }
        return lines + Status.text(orphans, retention: orphanRetention)
    }

    func json(now: Timestamp) -> JSONValue {
        func time(_ t: Timestamp?) -> JSONValue { t.map { .string($0.iso8601) } ?? .null }
        func number(_ value: Int) -> JSONValue { .number(JSONNumber(value)) }
        func holder(_ holder: PostgresStatus.Holder) -> JSONValue {
            let seconds = Double((holder.expiresIn ?? .zero) / .milliseconds(1)) / 1000
            return .object(JSONObject([
                ("instance", .string(holder.holder)), ("epoch", number(Int(holder.epoch))), ("leaseSeconds", .number(JSONNumber(text: String(format: "%.3f", seconds)))),
            ]))
        }
        func source(_ source: Source) -> JSONValue {
            let lag: JSONValue = source.marks.map { number(max(0, Int((now.millisecondsSinceEpoch - $0.live.millisecondsSinceEpoch) / 1000))) } ?? .null
            return .object(JSONObject([
                ("name", .string(source.name)), ("cursor", time(source.marks?.live)), ("lagSeconds", lag),
                ("settled", time(source.marks?.settled)), ("polledBy", source.holder.map(holder) ?? .null),
            ]))
        }
        func inFlight(_ held: PostgresStatus.InFlight) -> JSONValue {
            .object(JSONObject([("instance", .string(held.instance)), ("requests", number(held.requests)), ("events", number(held.deliveries))]))
        }
        func subscription(_ subscription: Subscription) -> JSONValue {
            .object(JSONObject([
                ("name", .string(subscription.name)), ("pending", number(subscription.pending)), ("deadLetters", number(subscription.deadLetters)),
                ("inFlight", .array(subscription.inFlight.map(inFlight))),
                ("paused", subscription.pause.map { .object(JSONObject([("since", .string($0.since.iso8601)), ("reason", .string($0.reason))])) } ?? .null),
            ]))
        }
        return .object(JSONObject([
            ("store", .string("postgres")), ("sources", .array(sources.map(source))), ("subscriptions", .array(subscriptions.map(subscription))),
            ("orphans", .array(orphans.map { Status.json($0, retention: orphanRetention) })),
        ]))
    }
}
