import ArgumentParser
import Foundation
import RelayCore

struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Deliver a subscription's events of a time range again, read anew from the Events API.",
        discussion: """
            Records the request in the state store; the running daemon picks it up within one poll interval, reads \
            the range again and queues every event the subscription matches, under its original webhook-id \
            (one-event requests; a batch gets a new id), so that receivers that dedupe drop what they had. Events \
            still queued are not queued twice. Without --wait it returns at once; with --wait it prints how many \
            events were queued once the range has been read. Needs none of the config's secrets.
            """
    )

    @OptionGroup var store: StoreOptions

    @Option(name: .long, help: ArgumentHelp("The subscription whose events to deliver again.", valueName: "name"))
    var subscription: String

    @Option(name: .long, help: ArgumentHelp("The start of the range, an ISO-8601 time.", valueName: "time"))
    var since: String

    @Option(name: .long, help: ArgumentHelp("The end of the range (not included); default: now.", valueName: "time"))
    var until: String?

    @Flag(name: .long, help: "Wait until the daemon has read the whole range, and print how many events it queued.")
    var wait = false

    func run() async throws {
        let (config, directory) = try store.loadForStateCommand()
        guard config.subscriptions.contains(where: { $0.name == subscription }) else {
            printToStandardError("intilery-relay: no subscription named \(subscription) in the config")
            throw ExitCode(64)
        }
        let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
        guard let start = Timestamp(iso8601: since) else {
            printToStandardError("intilery-relay: --since \(since) is not an ISO-8601 time such as 2024-05-01T09:00:00Z")
            throw ExitCode(64)
        }
        var end = now
        if let until {
            guard let parsed = Timestamp(iso8601: until) else {
                printToStandardError("intilery-relay: --until \(until) is not an ISO-8601 time such as 2024-05-01T10:00:00Z")
                throw ExitCode(64)
            }
            end = min(parsed, now)
        }
        guard start < end else {
            printToStandardError("intilery-relay: nothing to replay: --since must be before --until and before now")
            throw ExitCode(64)
        }
        let stateStore: StateStore
        let id: Int64
        do {
            stateStore = try openExistingState(directory)
            id = try await stateStore.requestReplay(subscription: subscription, since: start, until: end, now: now)
        } catch let error as StoreError {
            throw exitForStoreError(error)
        }
        let running = Self.daemonIsRunning(directory)
        guard wait else {
            printLine(
                "Replay \(id) of \(subscription) from \(start.iso8601) to \(end.iso8601) recorded; "
                    + (running ? "the daemon picks it up within one poll interval." : "no daemon runs on this state now: the next start picks it up."))
            return
        }
        guard running else {
            printToStandardError("intilery-relay: replay \(id) recorded, but no daemon runs on \(directory) to read it; it will at the next start")
            throw ExitCode(1)
        }
        let progress = Progress()
        while true {
            let request: ReplayRequest?
            do { request = try await stateStore.replayRequest(id) } catch { throw exitForStoreError(error) }
            if let request, request.finishedAt == nil {
                let span = Double(max(1, request.until.millisecondsSinceEpoch - request.since.millisecondsSinceEpoch))
                let read = Double(request.position.millisecondsSinceEpoch - request.since.millisecondsSinceEpoch)
                progress.show("read to \(request.position.iso8601) (\(Int(max(0, min(1, read / span)) * 100))%), \(request.queued) events queued")
            }
            if let request, request.finishedAt != nil {
                progress.finish()
                printLine("Replayed \(subscription) from \(start.iso8601) to \(end.iso8601): \(request.queued) events queued.")
                return
            }
            if !Self.daemonIsRunning(directory) {
                progress.finish()
                printToStandardError("intilery-relay: the daemon stopped before replay \(id) was done; the next start goes on with it")
                throw ExitCode(1)
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Whether a daemon holds the state directory's lock. A probe: taking the lock would write this process's
    /// pid into it, and a `reload` reading it then would signal replay instead of the daemon.
    static func daemonIsRunning(_ directory: String) -> Bool {
        StateDirectoryLock.holder(directory: directory).held
    }
}
