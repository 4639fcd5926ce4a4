import ArgumentParser

struct DeadLetters: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead-letters",
        abstract: "Inspect, replay or purge deliveries that failed for good.",
        subcommands: [List.self, Replay.self, Purge.self]
    )

    /// `--subscription` and `--json`, common to every dead-letter command.
    struct Selection: ParsableArguments {
        @Option(name: .long, help: ArgumentHelp("Only this subscription's dead letters.", valueName: "name"))
        var subscription: String?

        @Flag(name: .long, help: "Print JSON.")
        var json = false
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List dead letters.",
            discussion: "With --json, a JSON array with one object per dead-lettered event: id, subscription, eventID, reason, status, attempts, firstAttemptAt, lastAttemptAt."
        )
        @OptionGroup var store: StoreOptions
        @OptionGroup var selection: Selection

        func run() async throws { throw notAvailableYet("dead-letters list") }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put dead letters back in the queue with fresh attempts. Safe while the daemon runs.")
        @OptionGroup var store: StoreOptions
        @OptionGroup var selection: Selection

        func run() async throws { throw notAvailableYet("dead-letters replay") }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete dead letters. Safe while the daemon runs.")
        @OptionGroup var store: StoreOptions
        @OptionGroup var selection: Selection

        func run() async throws { throw notAvailableYet("dead-letters purge") }
    }
}
