import ArgumentParser
import Foundation
import RelayCore

#if canImport(Glibc)
import Glibc
#endif

/// What the unit's `ExecReload=` runs: SIGHUP alone returns before the reload happens and cannot report a rejected
/// config, so this signals the daemon and waits for its ``ReloadAnswer``.
struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the running daemon to reload its config, and wait for its answer.",
        discussion: """
            Sends SIGHUP to the daemon holding the state directory (or to --pid, whose own state directory is used) \
            and waits until it has applied or rejected the config. Exit codes: 0 applied, 78 rejected (the problems are printed; the running config \
            stays), 69 no daemon is running on the state directory, 1 no answer within --timeout or the daemon \
            stopped first.
            """
    )

    /// --config and --state-dir, as every command that reads the state has them.
    @OptionGroup var store: StoreOptions

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The daemon's pid (systemd: $MAINPID), whose own state directory is then used; else the one holding the state directory.",
            valueName: "pid"))
    var pid: Int32?

    // Under systemd's default 90 s limit for ExecReload=, so that this says what happened before it is killed.
    @Option(name: .long, help: ArgumentHelp("How long to wait for the answer.", valueName: "duration"))
    var timeout: String = "60s"

    static let notRunning = ExitCode(69)

    func run() throws {
        guard let limit = DurationText.parse(timeout), limit > .zero else {
            throw ValidationError("--timeout must be a duration such as \"30s\".")
        }
        let directory: String
        let target: Int32
        if let pid {
            // From the daemon itself: the edited config may name another state directory, or not parse at all.
            guard let held = StateDirectoryLock.directory(heldBy: pid), StateDirectoryLock.holder(directory: held).held else {
                printToStandardError("intilery-relay reload: pid \(pid) is not a running relay (it holds no state directory)")
                throw Self.notRunning
            }
            (directory, target) = (held, pid)
        } else {
            directory = StateDirectory.resolve(
                flag: store.stateDirectory, configured: ConfigLoader.stateDirectoryKey(file: store.config),
                environment: ProcessInfo.processInfo.environment)
            let holder = StateDirectoryLock.holder(directory: directory)
            guard holder.held, let holderPID = holder.pid else {
                printToStandardError("intilery-relay reload: no relay is running on the state directory \(directory)")
                throw Self.notRunning
            }
            target = holderPID
        }
        let signalledAt = MonotonicClock.nanoseconds()
        guard kill(target, SIGHUP) == 0 else {
            printToStandardError("intilery-relay reload: cannot signal pid \(target): \(String(cString: strerror(errno)))")
            throw ExitStatus.failure
        }
        let deadline = ContinuousClock.now + limit
        func answer() -> ReloadAnswer? {
            guard let answer = ReloadAnswer.read(directory: directory), answer.pid == target, answer.startedAt >= signalledAt else { return nil }
            return answer
        }
        while ContinuousClock.now < deadline {
            if let answer = answer() { return try report(answer) }
            guard StateDirectoryLock.holder(directory: directory).held else {
                // It may have answered and then stopped between the two looks.
                if let answer = answer() { return try report(answer) }
                printToStandardError("intilery-relay reload: the relay stopped before answering")
                throw ExitStatus.failure
            }
            usleep(20_000)
        }
        printToStandardError("intilery-relay reload: pid \(target) did not answer within \(timeout); see its log")
        throw ExitStatus.failure
    }

    private func report(_ answer: ReloadAnswer) throws {
        switch answer.outcome {
        case .applied:
            printLine("Reloaded: the new config is running.")
            for setting in answer.needsRestart { printLine("\(setting) changed: it takes effect at the next restart.") }
        case .rejected:
            for line in answer.problems { printToStandardError(line) }
            printToStandardError("intilery-relay reload: rejected; the running config stays")
            throw ExitStatus.configError
        }
    }
}
