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

/// The state store in `directory`, or exit 66 saying there is none: a wrong `--state-dir` or `stateDirectory`
/// must not read as an empty, healthy state.
func openExistingState(_ directory: String) throws -> StateStore {
    let opened: StateStore?
    do {
        opened = try StateStore.openExisting(directory: directory)
    } catch {
        throw exitForStoreError(error)
    }
    guard let opened else {
        printToStandardError("intilery-relay: no state in \(directory): the relay has not run with this state directory")
        throw ExitStatus.noSuchState
    }
    return opened
}

/// Exits 74 with the store's own words.
func exitForStoreError(_ error: StoreError) -> ExitCode {
    printToStandardError("intilery-relay: \(error)")
    return ExitStatus.ioError
}
