import CCurl
import Foundation
import Synchronization

/// Owns one curl multi handle and the thread that runs `curl_multi_poll` on it.
///
/// `@unchecked Sendable`: `multi` and `running` are used only on the driver thread; other threads reach it
/// through `inbox` (locked) and `curl_multi_wakeup`, which libcurl documents as safe from any thread.
final class CurlMultiDriver: @unchecked Sendable {
    private let multi: UnsafeMutableRawPointer
    private var running: [UnsafeMutableRawPointer: CurlTransfer] = [:]
    /// Transfers whose cancel reached the driver before the transfer itself did: failed as soon as they arrive.
    private var cancelledEarly: Set<ObjectIdentifier> = []

    private struct Inbox {
        var added: [CurlTransfer] = []
        var cancelled: [CurlTransfer] = []
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
        var shuttingDown = false
        var stopped = false
        /// The driver is in (or about to enter) `curl_multi_poll` and nobody has woken it since: only then does a
        /// hand-over need `curl_multi_wakeup`, a write to curl's socketpair that the driver must then read back.
        /// While the driver is busy it drains the inbox before it polls again anyway.
        var polling = false
    }
    private let inbox = Mutex(Inbox())

    init(maxCachedConnections: Int, maxConnectionsPerHost: Int) {
        CurlGlobal.initializeOnce()
        multi = curl_multi_init()
        _ = ccurl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, maxCachedConnections)
        _ = ccurl_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxConnectionsPerHost)
        _ = ccurl_multi_setopt_long(multi, CURLMOPT_PIPELINING, Int(CURLPIPE_MULTIPLEX))
        let thread = Thread { [self] in run() }
        thread.name = "curl-multi"
        thread.start()
    }

    /// Hands a transfer to the driver; false once shutdown has begun.
    func submit(_ transfer: CurlTransfer) -> Bool {
        // The wake-up happens under the lock: the driver marks itself stopped under it before cleaning the multi
        // handle up, so no wake-up can reach a handle being freed.
        inbox.withLock { inbox -> Bool in
            guard !inbox.shuttingDown else { return false }
            inbox.added.append(transfer)
            wake(&inbox)
            return true
        }
    }

    /// Asks the driver to abort a transfer and fail it as cancelled.
    func cancel(_ transfer: CurlTransfer) {
        inbox.withLock { inbox in
            guard !inbox.stopped else { return }
            inbox.cancelled.append(transfer)
            wake(&inbox)
        }
    }

    /// Fails whatever is still running, stops the thread and returns once it has stopped.
    func shutdown() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let alreadyStopped = inbox.withLock { inbox -> Bool in
                if inbox.stopped { return true }
                inbox.shuttingDown = true
                inbox.shutdownWaiters.append(continuation)
                inbox.polling = true
                wake(&inbox)
                return false
            }
            if alreadyStopped { continuation.resume() }
        }
    }

    /// Wakes the driver if it is polling; called under the inbox lock.
    private func wake(_ inbox: inout Inbox) {
        guard inbox.polling else { return }
        inbox.polling = false
        curl_multi_wakeup(multi)
    }

    private func run() {
        var finished: [(CurlTransfer, Result<HTTPResponse, CurlHTTPError>)] = []
        while true {
            let (added, cancelled, shuttingDown) = inbox.withLock { inbox in
                inbox.polling = false
                defer {
                    inbox.added.removeAll(keepingCapacity: true)
                    inbox.cancelled.removeAll(keepingCapacity: true)
                }
                return (inbox.added, inbox.cancelled, inbox.shuttingDown)
            }
            for transfer in added {
                if cancelledEarly.remove(ObjectIdentifier(transfer)) != nil {
                    finished.append((transfer, .failure(.cancelled(url: transfer.request.url))))
                    continue
                }
                running[transfer.easy] = transfer
                let code = curl_multi_add_handle(multi, transfer.easy)
                if code != CURLM_OK {
                    running[transfer.easy] = nil
                    let text = String(cString: curl_multi_strerror(code))
                    finished.append((transfer, .failure(.other(url: transfer.request.url, detail: text))))
                }
            }
            for transfer in cancelled {
                guard running.removeValue(forKey: transfer.easy) != nil else {
                    // Not here yet (its submit is still on the way), or already done.
                    if !transfer.isFinished { cancelledEarly.insert(ObjectIdentifier(transfer)) }
                    continue
                }
                curl_multi_remove_handle(multi, transfer.easy)
                finished.append((transfer, .failure(.cancelled(url: transfer.request.url))))
            }
            if shuttingDown {
                for transfer in running.values {
                    curl_multi_remove_handle(multi, transfer.easy)
                    finished.append((transfer, .failure(.shutDown(url: transfer.request.url))))
                }
                running.removeAll()
                resume(&finished)
                break
            }

            var stillRunning: Int32 = 0
            curl_multi_perform(multi, &stillRunning)
            var queued: Int32 = 0
            while let message = curl_multi_info_read(multi, &queued) {
                guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle,
                    let transfer = running.removeValue(forKey: easy)
                else { continue }
                let code = message.pointee.data.result
                curl_multi_remove_handle(multi, easy)
                finished.append((transfer, transfer.outcome(for: code)))
            }
            // Resumed outside every lock, after curl is done with the handles.
            resume(&finished)
            guard willPoll() else { continue }
            curl_multi_poll(multi, nil, 0, running.isEmpty ? 60_000 : 1_000, nil)
        }
        let (late, waiters) = inbox.withLock { inbox in
            // From here no wake-up reaches the handle (they happen under this lock, after checking this flag).
            inbox.stopped = true
            // Transfers submitted while the loop was finishing never reached curl.
            defer {
                inbox.added = []
                inbox.cancelled = []
                inbox.shutdownWaiters = []
            }
            return (inbox.added, inbox.shutdownWaiters)
        }
        curl_multi_cleanup(multi)
        // Resumed outside the lock: a resumed task may call back into the driver.
        for transfer in late { transfer.finish(.failure(.shutDown(url: transfer.request.url))) }
        for waiter in waiters { waiter.resume() }
    }

    /// Marks the driver as polling; false, leaving it unmarked, when work has arrived since the inbox was read.
    private func willPoll() -> Bool {
        inbox.withLock { inbox in
            if !inbox.added.isEmpty || !inbox.cancelled.isEmpty || inbox.shuttingDown { return false }
            inbox.polling = true
            return true
        }
    }

    private func resume(_ finished: inout [(CurlTransfer, Result<HTTPResponse, CurlHTTPError>)]) {
        for (transfer, result) in finished { transfer.finish(result) }
        finished.removeAll(keepingCapacity: true)
    }
}

/// `curl_global_init` must run once before any other curl call, and is not safe to race.
enum CurlGlobal {
    private static let initialized: Bool = {
        curl_global_init(Int(CURL_GLOBAL_ALL)) == CURLE_OK
    }()

    static func initializeOnce() { _ = initialized }
}
