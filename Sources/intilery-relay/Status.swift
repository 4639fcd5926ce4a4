import ArgumentParser

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show each source's cursor and lag, and each subscription's queue and dead letters."
    )

    @OptionGroup var store: StoreOptions

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    func run() async throws {
        throw notAvailableYet("status")
    }
}
