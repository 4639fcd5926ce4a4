import Foundation
import RelayCore
import Synchronization
import Testing

/// A callback called once per commit for as long as the daemon runs must cost the same on the millionth call.
@Suite struct CallbackSlotTests {
    /// The depth of the stack inside the callback is the same on every call: nothing wraps the stored closure.
    /// (A bare closure kept as a Mutex's value grew by two frames per call here.)
    @Test func everyCallGoesThroughTheSameFrames() {
        let slot = CallbackSlot<[String: [Int]]>()
        let depths = Mutex<[Int]>([])
        slot.set { _ in
            let depth = Thread.callStackReturnAddresses.count
            depths.withLock { $0.append(depth) }
        }
        for _ in 0..<50 { slot(["a": [1]]) }
        let seen = depths.withLock { $0 }
        #expect(seen.count == 50)
        #expect(Set(seen).count == 1, "stack depths \(seen.prefix(5))…\(seen.suffix(2))")
    }

    @Test func aReplacedCallbackIsTheOneCalledAndAnEmptySlotCallsNothing() {
        let slot = CallbackSlot<Int>()
        let calls = Mutex<[String]>([])
        slot(1)
        slot.set { value in calls.withLock { $0.append("first \(value)") } }
        slot(2)
        slot.set { value in calls.withLock { $0.append("second \(value)") } }
        slot(3)
        #expect(calls.withLock { $0 } == ["first 2", "second 3"])
    }
}
