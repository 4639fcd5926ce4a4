import ArgumentParser
import Foundation
import RelayCore

extension StoreOptions {
    /// The config, read without resolving secrets (these commands need none), and the state directory.
    func loadForStateCommand() throws -> (config: RelayConfig, directory: String) {
        let environment = ProcessInfo.processInfo.environment
        var configEnvironment = ConfigEnvironment(variables: environment)
        configEnvironment.resolvesSecrets = false
        let loaded: RelayConfig
        do {
            loaded = try ConfigLoader.load(file: config, environment: configEnvironment)
        } catch {
            for line in error.lines { printToStandardError(line) }
            throw ExitStatus.configError
        }
        return (loaded, StateDirectory.resolve(flag: stateDirectory, config: loaded, environment: environment))
    }
}

/// Exits 74 with the store's own words.
func exitForStoreError(_ error: StoreError) -> ExitCode {
    printToStandardError("intilery-relay: \(error)")
    return ExitStatus.ioError
}
