import ArgumentParser
import Foundation
import RelayCore
import RelayPostgres

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
        let name = subscription
        if case .postgres(let postgres) = config.store {
            let source = config.subscriptions.first { $0.name == name }?.source ?? ""
            let key = PostgresSourceStore.leaseKey(of: source, among: config.sources)
            try await withPostgresState(postgres, configFile: store.config) { database in
                let replays = PostgresReplays(database)
                try await carryOut(
                    record: { try await replays.requestReplay(subscription: name, since: start, until: end, now: now) },
                    read: { try await replays.replayRequest($0) },
                    polled: { try await PostgresStatus(database).holders().contains { $0.key == key && $0.expiresIn != nil } },
                    start: start, end: end,
                    where: (polled: "the instance polling \(source) picks it up within one poll interval.",
                            unpolled: "no instance polls \(source) now: the next one to take it picks it up."),
                    // A source's lease may lapse for a moment while it passes to another instance.
                    grace: .seconds(15))
            }
            return
        }
        let stateStore: StateStore
        do { stateStore = try openExistingState(directory) }
        do {
            try await carryOut(
                record: { try await stateStore.requestReplay(subscription: name, since: start, until: end, now: now) },
                read: { try await stateStore.replayRequest($0) }, polled: { Self.daemonIsRunning(directory) },
                start: start, end: end,
                where: (polled: "the daemon picks it up within one poll interval.",
                        unpolled: "no daemon runs on this state now: the next start picks it up."))
        } catch let error as StoreError {
            throw exitForStoreError(error)
        }
    }

    /// Records the request; with --wait, follows it until the range has been read, while something polls the
    /// subscription's source (`polled`).
    private func carryOut(
        record: () async throws -> Int64, read: (Int64) async throws -> ReplayRequest?, polled: () async throws -> Bool,
        start: Timestamp, end: Timestamp, where says: (polled: String, unpolled: String), grace: Duration = .zero
    ) async throws {
        let id = try await record()
        var lastPolled = ContinuousClock.now
        /// Whether something polls the source, or did within `grace`.
        func stillPolled() async throws -> Bool {
            if try await polled() {
                lastPolled = .now
                return true
            }
            return lastPolled.duration(to: .now) < grace
        }
        let running = try await polled()
        guard wait else {
            printLine("Replay \(id) of \(subscription) from \(start.iso8601) to \(end.iso8601) recorded; " + (running ? says.polled : says.unpolled))
            return
        }
        if !running {
            // Waited for within the grace: an instance may be taking the source over.
            while try await !polled() {
                guard lastPolled.duration(to: .now) < grace else {
                    printToStandardError("intilery-relay: replay \(id) recorded, but " + says.unpolled)
                    throw ExitCode(1)
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            lastPolled = .now
        }
        let progress = Progress()
        while true {
            let request = try await read(id)
            if let request, request.finishedAt == nil {
                let span = Double(max(1, request.until.millisecondsSinceEpoch - request.since.millisecondsSinceEpoch))
                let done = Double(request.position.millisecondsSinceEpoch - request.since.millisecondsSinceEpoch)
                progress.show("read to \(request.position.iso8601) (\(Int(max(0, min(1, done / span)) * 100))%), \(request.queued) events queued")
            }
            if let request, request.finishedAt != nil {
                progress.finish()
                printLine("Replayed \(subscription) from \(start.iso8601) to \(end.iso8601): \(request.queued) events queued.")
                return
            }
            if try await !stillPolled() {
                progress.finish()
                printToStandardError("intilery-relay: the relay stopped polling before replay \(id) was done; the next one to poll goes on with it")
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
