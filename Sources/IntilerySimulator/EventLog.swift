import Synchronization

/// The fake API's events, kept sorted by (timestamp, sequence), with generators for a backlog, live traffic,
/// same-millisecond bursts and late visibility.
public final class EventLog: Sendable {
    private struct State {
        var events: [SimulatedEvent] = []
        var nextSequence = 0
        var random = SeededRandom(seed: 42)
        var live: LiveTraffic?
    }

    /// Events generated as time passes: the n-th at `start + n / perSecond`.
    private struct LiveTraffic {
        var start: Int64
        var perSecond: Double
        var generated: Int
        var late: LateVisibility?
    }

    private let state = Mutex(State())
    private let time: SimulatorTime

    /// An empty log reading time from `time`.
    public init(time: SimulatorTime) { self.time = time }

    /// Some events become visible only a while after their timestamp.
    public struct LateVisibility: Sendable {
        /// The share of events that are late, 0 to 1.
        public var fraction: Double
        /// How long after its timestamp a late event becomes visible.
        public var delay: Duration

        /// Wraps a fraction and a delay.
        public init(fraction: Double, delay: Duration) {
            self.fraction = fraction
            self.delay = delay
        }
    }

    /// Adds `count` events spread evenly over `[from, to)`, with random actions, of which a fraction may be late.
    @discardableResult
    public func addBacklog(count: Int, from: Int64, to: Int64, late: LateVisibility? = nil) -> ClosedRange<Int> {
        let span = max(to - from, 1)
        return insert(count: count, late: late) { index, _ in from + Int64(index) * span / Int64(max(count, 1)) }
    }

    /// Adds `count` events all at one millisecond, as a bulk import or a journey step produces.
    @discardableResult
    public func addBurst(count: Int, at timestamp: Int64, late: LateVisibility? = nil) -> ClosedRange<Int> {
        insert(count: count, late: late) { _, _ in timestamp }
    }

    /// Adds one event with a chosen action (an index into ``SimulatedEvent/actions``), visible from `visibleAt`
    /// (default: its own time), its time field served as `timestampJSON` when given.
    @discardableResult
    public func add(
        at timestamp: Int64, actionIndex: UInt8, visibleAt: Int64? = nil, timestampJSON: String? = nil
    ) -> SimulatedEvent {
        state.withLock { state in
            let event = SimulatedEvent(
                sequence: state.nextSequence, timestamp: timestamp, visibleAt: visibleAt ?? timestamp, actionIndex: actionIndex,
                timestampJSON: timestampJSON)
            state.nextSequence += 1
            Self.insertSorted(event, into: &state.events)
            return event
        }
    }

    /// Generates live events at `perSecond` from now on; they appear as the clock passes their time.
    public func startLiveTraffic(perSecond: Double, late: LateVisibility? = nil) {
        let now = time.now
        state.withLock { $0.live = LiveTraffic(start: now, perSecond: perSecond, generated: 0, late: late) }
    }

    /// Stops generating live events.
    public func stopLiveTraffic() {
        materializeLiveEvents()
        state.withLock { $0.live = nil }
    }

    /// Every event so far, in ascending order, visible or not.
    public var allEvents: [SimulatedEvent] {
        materializeLiveEvents()
        return state.withLock { $0.events }
    }

    /// How many events exist so far.
    public var count: Int {
        materializeLiveEvents()
        return state.withLock { $0.events.count }
    }

    /// One page of what the API shows now, and how many events match in all.
    func page(_ query: EventsQuery) -> (events: [SimulatedEvent], total: Int) {
        materializeLiveEvents()
        let now = time.now
        return state.withLock { state in
            let events = state.events
            let lower = query.start.map { start in
                Self.firstIndex(in: events) { query.startInclusive ? $0.timestamp >= start : $0.timestamp > start }
            } ?? 0
            let upper = query.end.map { end in
                Self.firstIndex(in: events) { query.endInclusive ? $0.timestamp > end : $0.timestamp >= end }
            } ?? events.count
            guard lower < upper else { return ([], 0) }
            // Actions as indices, so the scan compares bytes, not strings: it may pass 10,000 events per page.
            var wanted = [Bool](repeating: true, count: SimulatedEvent.actions.count)
            for (index, action) in SimulatedEvent.actions.enumerated() { wanted[index] = query.matches(action: action) }
            var page: [SimulatedEvent] = []
            page.reserveCapacity(query.size)
            var matched = 0
            var index = query.ascending ? lower : upper - 1
            let step = query.ascending ? 1 : -1
            // Stops once the page is full: `total` then counts what was scanned, as an Elasticsearch-style API
            // reports a lower bound past its window.
            while index >= lower && index < upper && page.count < query.size {
                let event = events[index]
                index += step
                guard event.visibleAt <= now, wanted[Int(event.actionIndex)] else { continue }
                if matched >= query.from { page.append(event) }
                matched += 1
            }
            return (page, matched)
        }
    }

    // MARK: - Internals

    private func insert(
        count: Int, late: LateVisibility?, timestamp: (Int, inout SeededRandom) -> Int64
    ) -> ClosedRange<Int> {
        state.withLock { state in
            let first = state.nextSequence
            var added: [SimulatedEvent] = []
            added.reserveCapacity(count)
            for index in 0..<count {
                let ts = timestamp(index, &state.random)
                let action = UInt8(state.random.next() % UInt64(SimulatedEvent.actions.count))
                let visible = Self.visibleAt(ts, late: late, random: &state.random)
                added.append(SimulatedEvent(sequence: state.nextSequence, timestamp: ts, visibleAt: visible, actionIndex: action))
                state.nextSequence += 1
            }
            Self.merge(added, into: &state.events)
            return first...max(first, state.nextSequence - 1)
        }
    }

    private static func visibleAt(_ timestamp: Int64, late: LateVisibility?, random: inout SeededRandom) -> Int64 {
        guard let late, Double(random.next() % 1_000_000) / 1_000_000 < late.fraction else { return timestamp }
        let (seconds, attoseconds) = late.delay.components
        return timestamp + seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    private func materializeLiveEvents() {
        let now = time.now
        state.withLock { state in
            guard var live = state.live else { return }
            let due = Int(Double(now - live.start) * live.perSecond / 1000)
            guard due > live.generated else { return }
            var added: [SimulatedEvent] = []
            for n in live.generated..<due {
                let ts = live.start + Int64((Double(n) * 1000 / live.perSecond).rounded(.down))
                let action = UInt8(state.random.next() % UInt64(SimulatedEvent.actions.count))
                let visible = Self.visibleAt(ts, late: live.late, random: &state.random)
                added.append(SimulatedEvent(sequence: state.nextSequence, timestamp: ts, visibleAt: visible, actionIndex: action))
                state.nextSequence += 1
            }
            live.generated = due
            state.live = live
            Self.merge(added, into: &state.events)
        }
    }

    private static func merge(_ added: [SimulatedEvent], into events: inout [SimulatedEvent]) {
        guard !added.isEmpty else { return }
        let sorted = added.sorted(by: SimulatedEvent.ascending)
        let needsSort = events.last.map { SimulatedEvent.ascending(sorted[0], $0) } ?? false
        events.append(contentsOf: sorted)
        if needsSort { events.sort(by: SimulatedEvent.ascending) }
    }

    private static func insertSorted(_ event: SimulatedEvent, into events: inout [SimulatedEvent]) {
        let index = firstIndex(in: events) { SimulatedEvent.ascending(event, $0) }
        events.insert(event, at: index)
    }

    /// The first index whose event satisfies a predicate that is false, then true, along the array.
    private static func firstIndex(in events: [SimulatedEvent], where predicate: (SimulatedEvent) -> Bool) -> Int {
        var low = 0
        var high = events.count
        while low < high {
            let mid = (low + high) / 2
            if predicate(events[mid]) { high = mid } else { low = mid + 1 }
        }
        return low
    }
}
