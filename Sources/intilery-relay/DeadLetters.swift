import ArgumentParser
import Foundation
import RelayCore
import RelayJSON

struct DeadLetters: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead-letters",
        abstract: "Inspect, replay or purge deliveries that failed for good.",
        discussion: "All three read or change the state store directly and are safe while the daemon runs.",
        subcommands: [List.self, Replay.self, Purge.self]
    )

    /// `--subscription` and `--json`, common to every dead-letter command.
    struct Selection: ParsableArguments {
        @Option(name: .long, help: ArgumentHelp("Only this subscription's dead letters.", valueName: "name"))
        var subscription: String?

        @Flag(name: .long, help: "Print JSON.")
        var json = false

        func validate(against config: RelayConfig) throws {
            if let subscription, !config.subscriptions.contains(where: { $0.name == subscription }) {
                printToStandardError("intilery-relay: no subscription named \(subscription) in the config")
                throw ExitCode(64)
            }
        }
    }

    /// Opens the store for a dead-letter command, or explains that there is none yet.
    static func openStore(_ options: StoreOptions, _ selection: Selection) throws -> StateStore? {
        let (config, directory) = try options.loadForStateCommand()
        try selection.validate(against: config)
        do {
            return try StateStore.openExisting(directory: directory)
        } catch {
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
            var letters: [DeadLetter] = []
            if let stateStore = try DeadLetters.openStore(store, selection) {
                do { letters = try await stateStore.deadLetters(subscription: selection.subscription) } catch {
                    throw exitForStoreError(error)
                }
            }
            if selection.json {
                printLine(JSONValue.array(letters.map(Self.json)).description)
                return
            }
            if letters.isEmpty { printLine("No dead letters.") }
            for letter in letters {
                printLine(
                    "\(letter.id)  \(letter.subscription)  \(letter.eventID)  \(letter.reason)"
                        + "  status \(letter.status.map(String.init) ?? "-")  attempts \(letter.attempts)"
                        + "  first \(letter.firstAttemptAt?.iso8601 ?? "-")  last \(letter.lastAttemptAt?.iso8601 ?? "-")")
            }
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
            abstract: "Put dead letters back in the queue with fresh attempts, due now.")
        @OptionGroup var store: StoreOptions
        @OptionGroup var selection: Selection

        func run() async throws {
            var count = 0
            if let stateStore = try DeadLetters.openStore(store, selection) {
                let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
                do { count = try await stateStore.replayDeadLetters(subscription: selection.subscription, now: now) } catch {
                    throw exitForStoreError(error)
                }
            }
            printLine(selection.json ? #"{"replayed":\#(count)}"# : "Replayed \(count) dead letters.")
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete dead letters.")
        @OptionGroup var store: StoreOptions
        @OptionGroup var selection: Selection

        func run() async throws {
            var count = 0
            if let stateStore = try DeadLetters.openStore(store, selection) {
                do { count = try await stateStore.purgeDeadLetters(subscription: selection.subscription) } catch {
                    throw exitForStoreError(error)
                }
            }
            printLine(selection.json ? #"{"purged":\#(count)}"# : "Purged \(count) dead letters.")
        }
    }
}
