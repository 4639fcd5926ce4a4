import CHeap

/// Gives freed heap memory back to the system once a burst of deliveries is over. A drain leaves glibc's heap
/// holding freed chunks between live ones, which count as the idle daemon's private memory until reused
/// (`malloc_trim` returned 1.5 MiB of 11.5 after a 100,000-event drain). Trimming while busy would only contend
/// with the allocating threads, so it happens once per burst, at the first maintenance pass that finds the queue
/// empty or no delivery since the pass before.
struct HeapTrim {
    private var lastDelivered: Int?
    private var deliveredAtTrim = 0

    /// Whether to trim now, given the delivered and pending counts this pass reads. The first pass with the queue
    /// empty after a start counts as the end of a burst too: once, and cheap.
    mutating func shouldTrim(delivered: Int, pending: Int) -> Bool {
        defer { lastDelivered = delivered }
        guard delivered != deliveredAtTrim, pending == 0 || delivered == lastDelivered else { return false }
        deliveredAtTrim = delivered
        return true
    }

    /// Returns the heap's free memory to the system.
    static func trim() { _ = relay_heap_trim() }
}
