import CCurl
import Synchronization

/// Idle easy handles, reset and kept for the next request: `curl_easy_init` and `curl_easy_cleanup` per request
/// allocate and free curl's whole per-transfer state. Connections are not held here; the multi handle keeps those.
///
/// `@unchecked Sendable`: the handles are raw pointers, each owned by one transfer at a time and touched here only
/// under the lock.
final class CurlEasyPool: @unchecked Sendable {
    /// An idle handle: no one else holds it.
    private struct Idle: @unchecked Sendable {
        let easy: UnsafeMutableRawPointer
    }
    private struct Handles {
        var idle: [Idle] = []
        var closed = false
    }
    private let handles = Mutex(Handles())
    private let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    deinit { close() }

    /// An idle handle, or a new one; nil if curl cannot make one.
    func take() -> UnsafeMutableRawPointer? {
        handles.withLock { $0.idle.popLast() }?.easy ?? curl_easy_init()
    }

    /// Takes back a handle no multi handle holds any more: reset (every option to its default) and kept, or freed
    /// when the pool is full or closed.
    func give(_ easy: UnsafeMutableRawPointer) {
        curl_easy_reset(easy)
        let kept = handles.withLock { handles -> Bool in
            guard !handles.closed, handles.idle.count < capacity else { return false }
            handles.idle.append(Idle(easy: easy))
            return true
        }
        if !kept { curl_easy_cleanup(easy) }
    }

    /// Frees the idle handles; handles given back later are freed at once.
    func close() {
        let idle = handles.withLock { handles -> [Idle] in
            handles.closed = true
            defer { handles.idle = [] }
            return handles.idle
        }
        for handle in idle { curl_easy_cleanup(handle.easy) }
    }
}
