import ArgumentParser
import Foundation
import RelayCore
import RelayPostgres

struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Resume a subscription paused after repeated dead letters.",
        discussion: """
            A subscription pauses after webhook.pauseAfter consecutive dead letters (status says why). This lifts the \
            pause in the state store; a running daemon picks it up within a second and sends again. Safe while the \
            daemon runs; needs none of the config's secrets. On PostgreSQL the pause is lifted for every instance.
            """
    )

    @OptionGroup var store: StoreOptions

    @Option(name: .long, help: ArgumentHelp("The subscription to resume.", valueName: "name"))
    var subscription: String

    func run() async throws {
        let (config, directory) = try store.loadForStateCommand()
        guard config.subscriptions.contains(where: { $0.name == subscription }) else {
            printToStandardError("intilery-relay: no subscription named \(subscription) in the config")
            throw ExitCode(64)
        }
        if case .postgres(let postgres) = config.store {
            let subscription = subscription
            let resumed = try await withPostgresState(postgres, configFile: store.config) { try await PostgresPauses($0).resume(subscription) }
            printLine(resumed ? "Resumed \(subscription) for every instance." : "\(subscription) is not paused.")
            return
        }
        let stateStore = try openExistingState(directory)
        let resumed: Bool
        do {
            resumed = try await stateStore.resume(subscription)
        } catch {
            throw exitForStoreError(error)
        }
        printLine(resumed ? "Resumed \(subscription)." : "\(subscription) is not paused.")
    }
}
