import ArgumentParser
import RelayCore

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the version, the git commit it was built from, and the Swift, libcurl and SQLite versions.",
        discussion: "`--version` prints the version alone.")

    func run() {
        // One write: a reader that stops after the first lines (`version | head -2`) cannot make a later write fail.
        printLine(RelayVersion.lines.joined(separator: "\n"))
    }
}
