import ArgumentParser
import RelayCore

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the version, the git commit it was built from, and the Swift, libcurl and SQLite versions.",
        discussion: "`--version` prints the version alone.")

    func run() {
        for line in RelayVersion.lines { printLine(line) }
    }
}
