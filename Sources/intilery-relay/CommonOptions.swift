import ArgumentParser

/// `--config` and `--state-dir`, shared by every command that reads the state store.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The JSON config file.", valueName: "file"))
    var config: String

    @Option(
        name: .customLong("state-dir"),
        help: ArgumentHelp(
            "The state directory; else stateDirectory in the config, else $STATE_DIRECTORY, else ./state.",
            valueName: "dir"))
    var stateDirectory: String?
}

/// How log lines are written.
enum LogFormat: String, ExpressibleByArgument, CaseIterable {
    case logfmt, json
}

/// The least severe log level printed.
enum LogLevelOption: String, ExpressibleByArgument, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}
