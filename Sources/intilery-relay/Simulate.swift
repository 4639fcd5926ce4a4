import ArgumentParser

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the built-in fake Events API and webhook receiver alone, for trying configs by hand."
    )

    @Option(name: .long, help: "Port of the fake Events API (0: any free port).")
    var apiPort: Int = 8080

    @Option(name: .long, help: "Port of the webhook receiver (0: any free port).")
    var sinkPort: Int = 8081

    @Option(name: .long, help: "Events generated in the past before start.")
    var backlog: Int = 1000

    @Option(name: .long, help: "Live events generated per second.")
    var rate: Double = 10

    @Option(name: .long, help: ArgumentHelp("Fault knobs, such as error=0.1,latency=50ms.", valueName: "spec"))
    var faults: String?

    func run() async throws {
        throw notAvailableYet("simulate")
    }
}
