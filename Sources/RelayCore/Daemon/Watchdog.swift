import AsyncAlgorithms
import Logging
import ServiceLifecycle

/// Pings systemd's watchdog at half its interval while the pipeline makes progress or is idle by choice; withholds
/// the ping while a part is stuck in a store step for longer than the interval, so that systemd restarts a relay
/// that no longer moves. It pings through a graceful stop: it is stopped after the pipeline.
public struct Watchdog: Service {
    let interval: Duration
    let progress: ProgressMonitor
    let notifier: SystemdNotifier
    let logger: Logger

    public init(interval: Duration, progress: ProgressMonitor, notifier: SystemdNotifier, logger: Logger) {
        self.interval = interval
        self.progress = progress
        self.notifier = notifier
        self.logger = logger
    }

    public func run() async throws {
        var withheld = false
        check(&withheld)
        for await _ in AsyncTimerSequence(interval: interval / 2, clock: .continuous).cancelOnGracefulShutdown() {
            check(&withheld)
        }
    }

    private func check(_ withheld: inout Bool) {
        guard let stuck = progress.stuck(longerThan: interval).first else {
            withheld = false
            notifier.watchdog()
            return
        }
        if !withheld {
            logger.critical(
                "not pinging the watchdog: a part is stuck; systemd will restart the relay",
                metadata: ["part": "\(stuck.part)", "stuck_s": .stringConvertible(LogSeconds(stuck.running))])
        }
        withheld = true
    }
}
