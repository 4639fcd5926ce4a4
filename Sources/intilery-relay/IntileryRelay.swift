import ArgumentParser
import RelayCore

/// The `intilery-relay` command: a daemon and its operator tools.
@main
struct IntileryRelay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "intilery-relay",
        abstract: "Relays Intilery Events API events to webhooks, at least once.",
        version: RelayVersion.current,
        subcommands: [Run.self, CheckConfig.self, Reload.self, Status.self, Top.self, DeadLetters.self, Replay.self, Resume.self, Match.self, Demo.self, Simulate.self, Version.self]
    )
}

/// sysexits(3) codes that docs/operations.md promises.
enum ExitStatus {
    static let configError = ExitCode(78)
    static let noSuchState = ExitCode(66)
    static let ioError = ExitCode(74)
    static let stateInUse = ExitCode(75)
    static let failure = ExitCode(1)
}

/// Says that a command is part of the contract but not in this build yet, and fails.
func notAvailableYet(_ command: String) -> ExitCode {
    printToStandardError("intilery-relay \(command): not available yet in this build")
    return ExitStatus.failure
}
