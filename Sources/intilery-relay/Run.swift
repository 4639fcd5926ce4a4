import ArgumentParser

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the relay in the foreground, logging to standard error.",
        discussion: """
            SIGTERM or SIGINT stops polling, lets in-flight requests finish for up to shutdownGrace, leaves the rest \
            queued and exits 0. SIGHUP reloads the config; an invalid one is logged and the old one keeps running.
            """
    )

    @OptionGroup var store: StoreOptions

    @Option(name: .long, help: "Log line format.")
    var logFormat: LogFormat = .logfmt

    @Option(name: .long, help: "The least severe level logged.")
    var logLevel: LogLevelOption = .info

    func run() async throws {
        throw notAvailableYet("run")
    }
}
