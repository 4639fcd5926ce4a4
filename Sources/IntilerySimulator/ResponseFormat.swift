/// Which of the body shapes the relay accepts (docs/configuration.md, `response`) the fake API answers with, so the relay is tested on each.
public enum ResponseShape: String, Sendable, CaseIterable {
    /// A top-level array of events.
    case array
    /// `{"events": [...]}`.
    case events
    /// `{"data": [...]}`.
    case data
    /// `{"results": [...]}`.
    case results
    /// `{"items": [...]}`.
    case items
    /// `{"hits": {"total": N, "hits": [{"_id": ..., "_source": {...}}]}}`, the id only in `_id`.
    case elasticsearch
    /// `{"meta": {...}, "payload": {"list": [...]}}` with fields `meta.ref`, `occurred`, `kind`: only readable with
    /// the `response` overrides.
    case custom
}

/// Which field names carry the id, time and action, covering the relay's fallbacks.
public enum FieldNaming: String, Sendable, CaseIterable {
    /// `eventID`, `timestamp` (ISO-8601, ms, `Z`), `action` (plus Segment's `type` and `event`).
    case canonical
    /// `eventId`, `date` (ISO-8601 with a `+00:00` offset, no fraction), `event`.
    case camel
    /// `event_id`, `receivedAt` (epoch milliseconds), `type`.
    case snake
    /// `messageId`, `createdAt` (ISO-8601 with microseconds), `type`/`event` as Segment writes them.
    case segment
}
