import ArgumentParser
import Foundation
import RelayCore

extension StoreOptions {
    /// The config, read without resolving secrets (these commands need none), and the state directory.
    func loadForStateCommand() throws -> (config: RelayConfig, directory: String) {
        let loaded = try loadConfigWithoutSecrets(config)
        return (loaded, StateDirectory.resolve(flag: stateDirectory, config: loaded, environment: ProcessInfo.processInfo.environment))
    }
}

/// The config for a command that sends nothing (status, match, top...): secrets are left unresolved, so it needs
/// neither the daemon's environment nor its credentials. Exits 78 with every problem.
func loadConfigWithoutSecrets(_ file: String) throws -> RelayConfig {
    var environment = ConfigEnvironment(variables: ProcessInfo.processInfo.environment)
    environment.resolvesSecrets = false
    do {
        return try ConfigLoader.load(file: file, environment: environment)
    } catch {
        for line in error.lines { printToStandardError(line) }
        throw ExitStatus.configError
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
