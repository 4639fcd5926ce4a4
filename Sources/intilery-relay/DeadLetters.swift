import ArgumentParser
import Foundation
import RelayCore
import RelayJSON
import RelayPostgres

struct DeadLetters: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead-letters",
        abstract: "Inspect, replay or purge deliveries that failed for good.",
        discussion: "Each reads or changes the state store directly (SQLite, or PostgreSQL from any machine that reaches it) and is safe while the relay runs.",
        subcommands: [List.self, Show.self, Replay.self, Purge.self]
    )

    /// `--subscription`, the filters and `--json`, common to list, replay and purge.
    struct Selection: ParsableArguments {
        @Option(name: .long, help: ArgumentHelp("Only this subscription's dead letters.", valueName: "name"))
        var subscription: String?

        @Option(name: .long, help: ArgumentHelp("Only those whose reason starts with this (http_4, max_age, max_attempts).", valueName: "text"))
        var reason: String?

        @Option(name: .long, help: ArgumentHelp("Only those whose last HTTP status was this.", valueName: "code"))
        var status: Int?

        @Option(name: .long, help: ArgumentHelp("Only those dead-lettered at or after this ISO-8601 time.", valueName: "time"))
        var since: String?

        @Option(name: .long, help: ArgumentHelp("Only those dead-lettered before this ISO-8601 time.", valueName: "time"))
        var until: String?

        @Option(name: .long, help: ArgumentHelp("At most this many, oldest first.", valueName: "n"))
        var limit: Int?

        @Flag(name: .long, help: "Print JSON.")
        var json = false

        func validate() throws {
            for (flag, text) in [("--since", since), ("--until", until)] {
                if let text, Timestamp(iso8601: text) == nil {
                    throw ValidationError("\(flag) \(text) is not an ISO-8601 time such as 2024-05-01T09:00:00Z")
                }
            }
            if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
            // "" would match every reason while counting as a filter: purge would need no --all.
            if reason == "" { throw ValidationError("--reason must not be empty") }
        }

        /// The store's filter for these options, for `subscription` (one of several, when none was named).
        func filter(subscription: String? = nil) -> DeadLetterFilter {
            DeadLetterFilter(
                subscription: subscription ?? self.subscription, reasonPrefix: reason, status: status,
                since: since.flatMap { Timestamp(iso8601: $0) }, until: until.flatMap { Timestamp(iso8601: $0) }, limit: limit)
        }

        /// Whether the selected subscription is one the config has (false for a removed one kept in the store).
        func isCurrent(in config: RelayConfig) -> Bool {
            guard let subscription else { return true }
            return config.subscriptions.contains { $0.name == subscription }
        }
    }

    /// Runs `body` with the dead letters of the store the config names (the state directory's SQLite file, or
    /// the PostgreSQL schema) and the config. Exits 66 when there is no state and 74 when the store fails. A name
    /// the config no longer has is accepted when the store still holds its rows, unless `current` (replay would
    /// queue events that nothing sends).
    static func withStore<T: Sendable>(
        _ options: StoreOptions, _ selection: Selection? = nil, current: Bool = false,
        _ body: (any DeadLetterStore & OrphanStore, RelayConfig) async throws -> T
    ) async throws -> T {
        let (config, directory) = try options.loadForStateCommand()
        func checked(_ store: any DeadLetterStore & OrphanStore) async throws -> T {
            if let selection, let subscription = selection.subscription, !selection.isCurrent(in: config) {
                guard try await store.hasRows(of: subscription) else {
                    printToStandardError("intilery-relay: no subscription named \(subscription) in the config or the state")
                    throw ExitCode(64)
                }
                if current {
                    printToStandardError(
                        "intilery-relay: \(subscription) is no longer in the config: replayed events would wait for ever; add it back first, or list or purge them")
                    throw ExitCode(64)
                }
            }
            return try await body(store, config)
        }
        do {
            if case .postgres(let postgres) = config.store {
                return try await withPostgresState(postgres, configFile: options.config) { try await checked(PostgresDeadLetters($0)) }
            }
            return try await checked(try openExistingState(directory))
        } catch let error as StoreError {
            throw exitForStoreError(error)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List dead letters, oldest first.",
            discussion: "With --json, a JSON array with one object per dead-lettered event: id, subscription, eventID, reason, status, attempts, firstAttemptAt, lastAttemptAt."
        )
        @OptionGroup var store: StoreOptions
        @OptionGroup var selection: Selection

        func run() async throws {
            let (letters, orphaned) = try await DeadLetters.withStore(store, selection) { store, config in
                let letters = try await store.deadLetters(selection.filter())
                // A removed subscription's rows are kept for orphanRetention: say when they go.
                guard !selection.isCurrent(in: config) else { return (letters, nil as Orphan?) }
                return (letters, try await store.orphans().first { $0.subscription == selection.subscription })
            }
            if selection.json {
                printLine(JSONValue.array(letters.map(Self.json)).description)
                return
            }
            if let orphaned {
                printLine(
                    "\(orphaned.subscription) is no longer in the config (since \(orphaned.since.iso8601)): \(orphaned.queued) queued events"
                        + " and these dead letters are kept until orphanRetention passes; `purge` deletes them now.")
            }
            if letters.isEmpty {
                printLine("No dead letters.")
                return
            }
            let rows = letters.map { letter in
                [String(letter.id), letter.subscription, letter.eventID, letter.status.map(String.init) ?? "-", String(letter.attempts),
                 letter.firstAttemptAt?.iso8601 ?? "-", letter.lastAttemptAt?.iso8601 ?? "-", letter.reason]
            }
            for line in Table.render(header: ["ID", "SUBSCRIPTION", "EVENT", "STATUS", "ATTEMPTS", "FIRST ATTEMPT", "LAST ATTEMPT", "REASON"], rows: rows) {
                printLine(line)
            }
            if let limit = selection.limit, letters.count == limit { printLine("(the first \(limit); --limit for more)") }
        }

        static func json(_ letter: DeadLetter) -> JSONValue {
            .object(JSONObject([
                ("id", .number(JSONNumber(Int(letter.id)))), ("subscription", .string(letter.subscription)),
                ("eventID", .string(letter.eventID)), ("reason", .string(letter.reason)),
                ("status", letter.status.map { .number(JSONNumber($0)) } ?? .null),
                ("attempts", .number(JSONNumber(letter.attempts))),
                ("firstAttemptAt", letter.firstAttemptAt.map { .string($0.iso8601) } ?? .null),
                ("lastAttemptAt", letter.lastAttemptAt.map { .string($0.iso8601) } ?? .null),
            ]))
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put dead letters back in the queue with fresh attempts, due now.",
            discussion: "Takes the filters of list. In transactions of 10,000, so that the daemon's writes go on meanwhile; a terminal shows the progress.")
        @OptionGroup var store: StoreOptions
        @OptionGroup var selection: Selection

        @Flag(name: .long, help: "Say how many would be replayed, and change nothing.")
        var dryRun = false

        func run() async throws {
            let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
            let dryRun = dryRun
            let done: (taken: Int, queued: Int)? = try await DeadLetters.withStore(store, selection, current: true) { store, config in
                // Only into subscriptions the config has: a removed one's dead letters would wait for ever. One
                // filter over all of them, so that --limit takes the oldest, as list shows them.
                var filter = selection.filter()
                if selection.subscription == nil { filter.subscriptions = config.subscriptions.map(\.name) }
                let total = try await store.countDeadLetters(filter)
                if dryRun {
                    printLine(selection.json ? #"{"wouldReplay":\#(total)}"# : "Would replay \(total) dead letters (--dry-run: nothing changed).")
                    return nil
                }
                var taken = 0
                var queued = 0
                let progress = Progress(label: "replayed", total: total)
                while selection.limit.map({ taken < $0 }) ?? true {
                    var remaining = filter
                    remaining.limit = selection.limit.map { $0 - taken }
                    let done = try await store.replayDeadLetters(remaining, now: now, chunk: 10_000)
                    if done.taken == 0 { break }
                    taken += done.taken
                    queued += done.queued
                    progress.show(taken)
                }
                progress.finish()
                return (taken, queued)
            }
            guard let (taken, queued) = done else { return }
            let alreadyQueued = taken - queued
            printLine(
                selection.json
                    ? #"{"replayed":\#(taken),"alreadyQueued":\#(alreadyQueued)}"#
                    : "Replayed \(taken) dead letters" + (alreadyQueued > 0 ? " (\(alreadyQueued) of their events were queued already)." : "."))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one dead letter: the event, why it failed, and the receiver's last answer.",
            discussion: "With --json, an object: the fields of list, plus eventTime, deadAt, event (as received) and response (the first 1 KiB of the last answer).")
        @OptionGroup var store: StoreOptions

        @Argument(help: "The dead letter's id, as list shows it.")
        var id: Int64

        @Flag(name: .long, help: "Print JSON.")
        var json = false

        func run() async throws {
            let id = id
            let found = try await DeadLetters.withStore(store) { store, _ in try await store.deadLetter(id: id) }
            guard let letter = found else {
                printToStandardError("intilery-relay: no dead letter \(id); dead-letters list shows their ids")
                throw ExitCode(64)
            }
            let event = String(validating: letter.payload, as: UTF8.self)
            let response = String(validating: letter.responseSnippet, as: UTF8.self)
            if json {
                var object = List.json(letter).objectValue ?? JSONObject()
                object.members += [
                    ("eventTime", .string(letter.eventTime.iso8601)), ("deadAt", .string(letter.deadAt.iso8601)),
                    ("event", (try? JSONParser.parse(letter.payload)) ?? .string(event ?? "")),
                    ("response", .string(response ?? letter.responseSnippet.map { String($0, radix: 16) }.joined(separator: " "))),
                ]
                printLine(JSONValue.object(object).description)
                return
            }
            for (name, value) in [
                ("id", String(letter.id)), ("subscription", letter.subscription), ("event", letter.eventID),
                ("event time", letter.eventTime.iso8601), ("reason", letter.reason), ("status", letter.status.map(String.init) ?? "-"),
                ("attempts", String(letter.attempts)), ("first attempt", letter.firstAttemptAt?.iso8601 ?? "-"),
                ("last attempt", letter.lastAttemptAt?.iso8601 ?? "-"), ("dead-lettered", letter.deadAt.iso8601),
            ] {
                printLine(name.padding(toLength: 15, withPad: " ", startingAt: 0) + value)
            }
            // The receiver wrote the response and the event comes from outside: no escape sequence of theirs reaches
            // the terminal.
            printLine("response       " + (letter.responseSnippet.isEmpty ? "(none)" : response.map { "(\(letter.responseSnippet.count) bytes kept)\n" + Self.printable($0) } ?? "(\(letter.responseSnippet.count) bytes, not UTF-8)"))
            printLine("event as received:")
            printLine(event.map(Self.printable) ?? "(\(letter.payload.count) bytes, not UTF-8)")
        }

        /// Control characters other than newline and tab shown as U+FFFD.
        static func printable(_ text: String) -> String {
            String(String.UnicodeScalarView(text.unicodeScalars.map { scalar in
                let control = scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
                return control && scalar != "\n" && scalar != "\t" ? "\u{FFFD}" : scalar
            }))
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete dead letters.",
            discussion: """
                Takes the filters of list; without any, --all must say that every dead letter is meant. For a \
                subscription no longer in the config, also deletes its queued events. In transactions of 10,000; a \
                terminal shows the progress.
                """)
        @OptionGroup var store: StoreOptions
        @OptionGroup var selection: Selection

        @Flag(name: .long, help: "Delete every dead letter (required when no filter is given).")
        var all = false

        func validate() throws {
            if !all && !selection.filter().narrows {
                throw ValidationError("purge without a filter deletes every dead letter: add --all to mean that, or a filter such as --subscription")
            }
        }

        func run() async throws {
            let (count, queued) = try await DeadLetters.withStore(store, selection) { store, config in
                // A removed subscription's queued events are kept until orphanRetention: purging it takes them too.
                if let subscription = selection.subscription, !selection.isCurrent(in: config) {
                    let (queued, count) = try await store.purgeOrphan(subscription)
                    return (count, queued as Int?)
                }
                var count = 0
                let filter = selection.filter()
                let progress = Progress(label: "purged", total: try await store.countDeadLetters(filter))
                while selection.limit.map({ count < $0 }) ?? true {
                    var remaining = filter
                    remaining.limit = selection.limit.map { $0 - count }
                    let done = try await store.purgeDeadLetters(remaining, chunk: 10_000)
                    if done == 0 { break }
                    count += done
                    progress.show(count)
                }
                progress.finish()
                return (count, nil)
            }
            if selection.json {
                printLine(queued.map { #"{"purged":\#(count),"queuedPurged":\#($0)}"# } ?? #"{"purged":\#(count)}"#)
            } else {
                printLine("Purged \(count) dead letters" + (queued.map { " and \($0) queued events of a removed subscription." } ?? "."))
            }
        }
    }
}
