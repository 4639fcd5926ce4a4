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

        /// Whether the selected subscription is one the config has (false for a removed one kept in the store).
        func isCurrent(in config: RelayConfig) -> Bool {
            guard let subscription else { return true }
            return config.subscriptions.contains { $0.name == subscription }
        }
    }

    /// A dead-letter command's store and config; exits 66 when there is no state. A name the config no longer has is
    /// accepted when the store still holds its events, unless `current` (replay would queue events that nothing
    /// sends).
    static func openStore(_ options: StoreOptions, _ selection: Selection, current: Bool = false) async throws -> (StateStore, RelayConfig) {
        let (config, directory) = try options.loadForStateCommand()
        let store = try openExistingState(directory)
        guard let subscription = selection.subscription, !selection.isCurrent(in: config) else { return (store, config) }
        let kept: Bool
        do { kept = try await store.hasRows(of: subscription) } catch { throw exitForStoreError(error) }
        if !kept {
            printToStandardError("intilery-relay: no subscription named \(subscription) in the config or the state")
            throw ExitCode(64)
        }
        if current {
            printToStandardError(
                "intilery-relay: \(subscription) is no longer in the config: replayed events would wait for ever; add it back first, or list or purge them")
            throw ExitCode(64)
        }
        return (store, config)
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List dead letters, oldest first.",
            discussion: "With --json, a JSON array with one object per dead-lettered event: id, subscription, eventID, reason, status, attempts, firstAttemptAt, lastAttemptAt."
        )
        @OptionGroup var store: StoreOptions
        @OptionGroup var selection: Selection

        func run() async throws {
            let letters: [DeadLetter]
            var orphaned: Orphan?
            let (stateStore, config) = try await DeadLetters.openStore(store, selection)
            do {
                letters = try await stateStore.deadLetters(subscription: selection.subscription)
                if !selection.isCurrent(in: config) {
                    orphaned = try await stateStore.orphans().first { $0.subscription == selection.subscription }
                }
            } catch {
                throw exitForStoreError(error)
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
            let (stateStore, config) = try await DeadLetters.openStore(store, selection, current: true)
            let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
            // Only into subscriptions the config has: a removed one's dead letters would wait for ever.
            let names = selection.subscription.map { [$0] } ?? config.subscriptions.map(\.name)
            do {
                for name in names { count += try await stateStore.replayDeadLetters(subscription: name, now: now) }
            } catch {
                throw exitForStoreError(error)
            }
            printLine(selection.json ? #"{"replayed":\#(count)}"# : "Replayed \(count) dead letters.")
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete dead letters.",
            discussion: "For a subscription no longer in the config, also deletes its queued events.")
        @OptionGroup var store: StoreOptions
        @OptionGroup var selection: Selection

        func run() async throws {
            let count: Int
            var queued: Int?
            let (stateStore, config) = try await DeadLetters.openStore(store, selection)
            do {
                if let subscription = selection.subscription, !selection.isCurrent(in: config) {
                    (queued, count) = try await stateStore.purgeOrphan(subscription)
                } else {
                    count = try await stateStore.purgeDeadLetters(subscription: selection.subscription)
                }
            } catch {
                throw exitForStoreError(error)
            }
            if selection.json {
                printLine(queued.map { #"{"purged":\#(count),"queuedPurged":\#($0)}"# } ?? #"{"purged":\#(count)}"#)
            } else {
                printLine("Purged \(count) dead letters" + (queued.map { " and \($0) queued events of a removed subscription." } ?? "."))
            }
        }
    }
}
