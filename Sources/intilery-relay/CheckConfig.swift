import ArgumentParser
import Foundation
import RelayCore

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a config file and summarise it.",
        discussion: "Exits 0 and prints a summary when the file is valid; otherwise prints every problem, one per line as FILE: path: rule, and exits 78."
    )

    @Argument(help: "The JSON config file.")
    var file: String

    func run() throws {
        do {
            let config = try ConfigLoader.load(
                file: file, environment: ConfigEnvironment(variables: ProcessInfo.processInfo.environment))
            print(config.summary(file: file))
        } catch {
            for line in error.lines { printToStandardError(line) }
            throw ExitStatus.configError
        }
    }
}
