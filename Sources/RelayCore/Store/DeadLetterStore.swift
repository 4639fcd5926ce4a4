/// What the `dead-letters` commands need of a store: dead letters listed, shown, counted, replayed and purged with
/// one ``DeadLetterFilter``, the large changes in chunks so that a running relay's writes go on between them.
/// SQLite's ``StateStore`` and PostgreSQL's store provide it; the conformance tests hold both to the same behaviour.
public protocol DeadLetterStore: Sendable {
    /// The dead letters `filter` selects, oldest first (by the time they died, then id), without their events' bytes.
    func deadLetters(_ filter: DeadLetterFilter) async throws -> [DeadLetter]

    /// One dead letter with its event's bytes and the receiver's last answer, or nil.
    func deadLetter(id: Int64) async throws -> DeadLetter?

    /// How many dead letters `filter` selects, no more than its limit.
    func countDeadLetters(_ filter: DeadLetterFilter) async throws -> Int

    /// Puts at most `chunk` of the dead letters `filter` selects (oldest first) back in the queue, due now with fresh
    /// attempts, in one transaction. Returns how many it took (call again until 0) and how many deliveries it
    /// queued: fewer when an event is still queued for its subscription, which is never queued twice.
    func replayDeadLetters(_ filter: DeadLetterFilter, now: Timestamp, chunk: Int?) async throws -> (taken: Int, queued: Int)

    /// Deletes at most `chunk` of the dead letters `filter` selects (oldest first) in one transaction; how many.
    func purgeDeadLetters(_ filter: DeadLetterFilter, chunk: Int?) async throws -> Int

    /// Whether the store holds queued deliveries or dead letters of `subscription`: a name the config no longer has
    /// is still one the commands can act on.
    func hasRows(of subscription: String) async throws -> Bool
}

extension StateStore: DeadLetterStore {}
