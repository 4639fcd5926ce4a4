import ArgumentParser
import Foundation
import RelayCore
import RelayPostgres

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a config file and summarise it.",
        discussion: "Exits 0 and prints a summary when the file is valid; otherwise prints every problem, one per line as FILE: path: rule, and exits 78."
    )

    @Argument(help: "The JSON config file.")
    var positionalFile: String?

    // Every other command takes --config: accepted here too, so one habit works everywhere.
    @Option(name: .long, help: ArgumentHelp("The JSON config file (instead of the argument).", valueName: "file"))
    var config: String?

    func validate() throws {
        switch (positionalFile, config) {
        case (nil, nil): throw ValidationError("Name the config file: check-config --config FILE (or check-config FILE).")
        case (.some, .some): throw ValidationError("Name the config file once: either --config FILE or FILE.")
        default: break
        }
    }

    private var file: String { config ?? positionalFile ?? "" }

    func run() throws {
        do {
            let config = try ConfigLoader.load(
                file: file, environment: ConfigEnvironment(variables: ProcessInfo.processInfo.environment))
            if case .postgres(let postgres) = config.store {
                // The URL's parts (host, port, sslmode, timeouts) as the relay will connect with them.
                do {
                    _ = try PostgresURL(postgres.url.exposedValue)
                } catch {
                    printToStandardError("\(file): store.postgres.url: \(error)")
                    throw ExitStatus.configError
                }
            }
            print(config.summary(file: file))
        } catch let error as ConfigError {
            for line in error.lines { printToStandardError(line) }
            throw ExitStatus.configError
        }
    }
}
