import Metrics
import Synchronization

/// The store reads a scrape makes, one at a time and bounded in time: a busy or stalled disk must not make a
/// scrape outlast Prometheus's timeout (the relay would read as down), nor let scrapes pile up reads. A scrape
/// that finds a read running waits for that one; one that waits past the limit answers with the last values.
public final class ScrapeRefresh: Sendable {
    private let running = Mutex<Task<Void, Never>?>(nil)
    private let limit: Duration

    public init(limit: Duration = .seconds(2)) { self.limit = limit }

    /// Runs `read` unless one is running, and waits for it up to the limit. A failure or an overrun is counted.
    public func refresh(_ read: @escaping @Sendable () async throws -> Void) async {
        let task = running.withLock { running -> Task<Void, Never> in
            if let running { return running }
            // Cleared under the same lock, which is held until the task is stored: it cannot clear too early.
            let task = Task { [weak self] in
                do { try await read() } catch { Self.failed() }
                self?.running.withLock { $0 = nil }
            }
            running = task
            return task
        }
        let finished = await withTaskGroup(of: Bool.self) { group in
            group.addTask { await task.value; return true }
            group.addTask { [limit] in
                try? await Task.sleep(for: limit)
                return false
            }
            let first = await group.next() ?? true
            group.cancelAll()
            return first
        }
        if !finished { Self.failed() }
    }

    private static func failed() {
        Counter(label: "intilery_relay_scrape_store_read_failures_total").increment()
    }
}
