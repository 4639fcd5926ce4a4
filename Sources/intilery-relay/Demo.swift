import ArgumentParser

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the whole pipeline against the built-in simulator and receiver on loopback, printing each delivery."
    )

    @Option(name: .long, help: ArgumentHelp("Stop after this long, such as 30s; default: until Ctrl-C.", valueName: "duration"))
    var duration: String?

    func run() async throws {
        throw notAvailableYet("demo")
    }
}
