import ArgumentParser
import Foundation
import RelayCore
import RelayJSON
import RelayPostgres

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show each source's cursor and lag, and each subscription's queue, dead letters and last outcomes.",
        discussion: "Reads the state store; safe while the daemon runs. Needs none of the config's secrets."
    )

    @OptionGroup var store: StoreOptions

    @Flag(name: .long, help: "Print JSON instead of text.")
    var json = false

    func run() async throws {
        let (config, directory) = try store.loadForStateCommand()
        let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
        if case .postgres(let postgres) = config.store {
            let report = try await withPostgresState(postgres, configFile: store.config) { try await PostgresStatusReport.read($0, config: config) }
            if json {
                printLine(report.json(now: now).description)
            } else {
                for line in report.text(now: now) { printLine(line) }
            }
            return
        }
        let stateStore = try openExistingState(directory)
        let status: StoreStatus
        let orphans: [Orphan]
        do {
            status = try await stateStore.status(
                sources: config.sources.map(\.name), subscriptions: config.subscriptions.map(\.name))
            // As the daemon recorded them, less any name this config has brought back (it resumes at the reload).
            let current = Set(config.subscriptions.map(\.name))
            orphans = try await stateStore.orphans().filter { !current.contains($0.subscription) }
        } catch {
            throw exitForStoreError(error)
        }
        if json {
            printLine(Self.json(status, orphans: orphans, retention: config.orphanRetention, now: now).description)
        } else {
            for line in Self.text(status, now: now) { printLine(line) }
            for line in Self.text(orphans, retention: config.orphanRetention) { printLine(line) }
        }
    }

    static func text(_ orphans: [Orphan], retention: Duration) -> [String] {
        orphans.map { orphan in
            "removed subscription \(orphan.subscription): \(orphan.queued) queued, \(orphan.deadLetters) dead letters, not sent;"
                + " not in the config since \(orphan.since.iso8601), deleted after \(orphan.since.advanced(by: retention).iso8601)"
        }
    }

    static func text(_ status: StoreStatus, now: Timestamp) -> [String] {
        var lines: [String] = []
        for source in status.sources {
            guard let cursor = source.cursor else {
                lines.append("source \(source.name): not polled yet")
                continue
            }
            var line = "source \(source.name): cursor \(cursor.iso8601), lag \(lag(cursor, now))"
            if let settled = source.settled { line += ", settled through \(settled.iso8601)" }
            line += ", last poll \(source.lastPollAt?.iso8601 ?? "never")"
            if !source.skipped.isEmpty {
                let reasons = source.skipped.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
                line += ", skipped \(source.skipped.values.reduce(0, +)) unreadable events (\(reasons.joined(separator: ", ")))"
            }
            lines.append(line)
        }
        for subscription in status.subscriptions {
            var line = "subscription \(subscription.name): \(subscription.pending) pending"
            if let oldest = subscription.oldestPendingEventTime { line += " (oldest event \(oldest.iso8601))" }
            line += ", \(subscription.deadLetters) dead letters, \(subscription.delivered) delivered"
            line += ", last success \(subscription.lastSuccessAt?.iso8601 ?? "never")"
            line += ", last failure \(subscription.lastFailureAt?.iso8601 ?? "never")"
            if let failure = subscription.lastFailure { line += " (\(failure))" }
            if let pause = subscription.pause { line += "; PAUSED since \(pause.since.iso8601): \(pause.reason)" }
            if let cursor = subscription.cursor, cursor.state != .current {
                let why = cursor.reason == .queueFull ? "queue full" : "backfilling from startFrom"
                line += cursor.state == .joining
                    ? "; joining the shared poll"
                    : "; behind since \(cursor.since?.iso8601 ?? "?") (\(why)), reading on from \(cursor.position?.iso8601 ?? "?")"
            }
            lines.append(line)
        }
        return lines
    }

    static func json(_ status: StoreStatus, orphans: [Orphan], retention: Duration, now: Timestamp) -> JSONValue {
        func time(_ t: Timestamp?) -> JSONValue { t.map { .string($0.iso8601) } ?? .null }
        let sources = status.sources.map { source -> JSONValue in
            .object(JSONObject([
                ("name", .string(source.name)), ("cursor", time(source.cursor)),
                ("lagSeconds", source.cursor.map { .number(JSONNumber(Int((now.millisecondsSinceEpoch - $0.millisecondsSinceEpoch) / 1000))) } ?? .null),
                ("lastPollAt", time(source.lastPollAt)), ("settled", time(source.settled)),
                ("skipped", .object(JSONObject(source.skipped.sorted { $0.key < $1.key }.map { ($0.key, .number(JSONNumber($0.value))) }))),
            ]))
        }
        let subscriptions = status.subscriptions.map { subscription -> JSONValue in
            .object(JSONObject([
                ("name", .string(subscription.name)), ("pending", .number(JSONNumber(subscription.pending))),
                ("oldestPendingEventTime", time(subscription.oldestPendingEventTime)),
                ("deadLetters", .number(JSONNumber(subscription.deadLetters))),
                ("delivered", .number(JSONNumber(subscription.delivered))),
                ("lastSuccessAt", time(subscription.lastSuccessAt)), ("lastFailureAt", time(subscription.lastFailureAt)),
                ("lastFailure", subscription.lastFailure.map(JSONValue.string) ?? .null),
                ("paused", subscription.pause.map { .object(JSONObject([("since", .string($0.since.iso8601)), ("reason", .string($0.reason))])) } ?? .null),
                ("state", .string(subscription.cursor?.state.rawValue ?? "current")),
                ("behind", subscription.cursor.flatMap { cursor -> JSONValue? in
                    guard cursor.state != .current else { return nil }
                    return .object(JSONObject([
                        ("since", time(cursor.since)), ("reason", cursor.reason.map { .string($0.rawValue) } ?? .null),
                        ("position", time(cursor.position)),
                    ]))
                } ?? .null),
            ]))
        }
        let removed = orphans.map { json($0, retention: retention) }
        return .object(JSONObject([("sources", .array(sources)), ("subscriptions", .array(subscriptions)), ("orphans", .array(removed))]))
    }

    /// A removed subscription as `status --json` shows it.
    static func json(_ orphan: Orphan, retention: Duration) -> JSONValue {
        .object(JSONObject([
            ("name", .string(orphan.subscription)), ("queued", .number(JSONNumber(orphan.queued))),
            ("deadLetters", .number(JSONNumber(orphan.deadLetters))), ("since", .string(orphan.since.iso8601)),
            ("deletedAfter", .string(orphan.since.advanced(by: retention).iso8601)),
        ]))
    }

    private static func lag(_ cursor: Timestamp, _ now: Timestamp) -> String {
        let seconds = max(0, (now.millisecondsSinceEpoch - cursor.millisecondsSinceEpoch) / 1000)
        return DurationText.format(.seconds(seconds))
    }
}
