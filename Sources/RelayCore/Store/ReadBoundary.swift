/// Where a read of its own stands (a replay's, or a catch-up's for a subscription behind): its position, and the ids
/// it has queued at exactly that millisecond. Such a read goes on from its position by reading again from just
/// before it (after a full page, a restart, a takeover, a full queue): what is before the position, and what is
/// listed here at it, was queued already and is skipped, so that an event delivered since is not queued twice.
/// Both stores keep it with the replay request or the subscription's cursor.
public struct ReadBoundary: Sendable, Equatable {
    public var position: Timestamp
    public var ids: Set<String>

    /// A read at `position` that has queued `ids` at that millisecond.
    public init(position: Timestamp, ids: Set<String> = []) {
        self.position = position
        self.ids = ids
    }

    /// A read at `position`, with `ids` as stored when it was at `keptAt`: they count only if that is `position`
    /// still (other paths move a catch-up's position without touching its ids).
    public init(position: Timestamp, ids: Set<String>, keptAt: Timestamp?) {
        self.init(position: position, ids: keptAt == position ? ids : [])
    }

    /// Of `events` read from about the position on, those the read has not queued yet.
    public func unqueued(_ events: [Event]) -> [Event] {
        events.filter { $0.time > position || ($0.time == position && !ids.contains($0.id)) }
    }

    /// Where the read stands once queueing `fresh` (what ``unqueued(_:)`` left) came to `result` and moved it to
    /// `next`. The events it handled, queued or found still queued, are the first `queued + duplicates` of `fresh`:
    /// a full queue stops it at the first one it could not take.
    public func after(queueing fresh: [Event], _ result: EnqueueResult, movedTo next: Timestamp) -> ReadBoundary {
        let next = max(next, position)
        var ids = next == position ? self.ids : []
        for event in fresh.prefix(result.queued + result.duplicates) where event.time == next { ids.insert(event.id) }
        return ReadBoundary(position: next, ids: ids)
    }
}
