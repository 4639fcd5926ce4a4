import Metrics

/// The metrics of one source's poller, made once so that the hot path only increments.
public struct SourceMetrics: Sendable {
    /// Whether this instance holds the source's lease and polls it (several instances on PostgreSQL).
    public static func leaseHeld(source: String, _ held: Bool) {
        Gauge(label: "intilery_relay_source_lease_held", dimensions: [("source", source)]).record(held ? 1 : 0)
    }

    let eventsReceived: Counter
    let eventsQueued: Counter
    let duplicates: Counter
    private let name: String

    init(source: String) {
        name = source
        eventsReceived = Counter(label: "intilery_relay_events_received_total", dimensions: [("source", source)])
        eventsQueued = Counter(label: "intilery_relay_events_queued_total", dimensions: [("source", source)])
        duplicates = Counter(label: "intilery_relay_events_duplicate_total", dimensions: [("source", source)])
    }

    /// Removes a source's gauges once it has left the config; its counters stay, as counters do.
    static func remove(source: String) {
        for label in [
            "intilery_relay_poll_interval_seconds", "intilery_relay_cursor_lag_seconds", "intilery_relay_cursor_timestamp_seconds",
            "intilery_relay_last_successful_poll_timestamp_seconds",
        ] {
            Gauge(label: label, dimensions: [("source", source)]).destroy()
        }
    }

    /// When the API last answered a page that could be read: an alert on its age catches a source that gets no
    /// answer at all, or only failures, which a lag frozen at its last value cannot.
    func polledSuccessfully(at time: Timestamp) {
        Gauge(label: "intilery_relay_last_successful_poll_timestamp_seconds", dimensions: [("source", name)])
            .record(Double(time.millisecondsSinceEpoch) / 1000)
    }

    /// The configured `pollInterval`, so that an alert can compare the lag with it.
    func pollInterval(_ interval: Duration) {
        Gauge(label: "intilery_relay_poll_interval_seconds", dimensions: [("source", name)]).record(Double(interval / .milliseconds(1)) / 1000)
    }

    /// The live cursor, and how far it is behind the API's now, after a successful live poll. Made at the first
    /// one, not before: a lag at 0 for a source that never polled would read as "current", a cursor at 0 as 1970.
    func liveCursor(_ cursor: Timestamp, apiNow: Timestamp) {
        Gauge(label: "intilery_relay_cursor_timestamp_seconds", dimensions: [("source", name)])
            .record(Double(cursor.millisecondsSinceEpoch) / 1000)
        // Never below 0: the API's now is an estimate (its Date header, refined by the relay's clock within the
        // same second), so a later, coarser one can fall just before a cursor moved by an earlier, finer one. The
        // cursor itself never passes the API's now.
        Gauge(label: "intilery_relay_cursor_lag_seconds", dimensions: [("source", name)])
            .record(max(0, Double(cursor.duration(to: apiNow) / .milliseconds(1)) / 1000))
    }

    /// Events skipped because their id or time could not be read or placed, by reason.
    func skipped(_ reason: EventPageDecoder.SkipReason, _ count: Int) {
        Counter(label: "intilery_relay_events_skipped_total", dimensions: [("source", name), ("reason", reason.rawValue)])
            .increment(by: count)
    }

    /// API responses by status (`transport` when there was none).
    func response(_ status: String) {
        Counter(label: "intilery_relay_api_responses_total", dimensions: [("source", name), ("status", status)]).increment()
    }
}

/// The metrics of one subscription's dispatcher.
public struct SubscriptionMetrics: Sendable {
    let latency: Metrics.Timer
    let circuit: Gauge
    let paused: Gauge
    private let delivered: Counter
    private let retried: Counter
    private let deadLettered: Counter
    private let name: String

    init(subscription: String) {
        name = subscription
        latency = Metrics.Timer(label: "intilery_relay_delivery_seconds", dimensions: [("subscription", subscription)])
        circuit = Gauge(label: "intilery_relay_circuit_open", dimensions: [("subscription", subscription)])
        paused = Gauge(label: "intilery_relay_subscription_paused", dimensions: [("subscription", subscription)])
        func outcome(_ outcome: String) -> Counter {
            Counter(label: "intilery_relay_deliveries_total", dimensions: [("subscription", subscription), ("outcome", outcome)])
        }
        delivered = outcome("delivered")
        retried = outcome("retry")
        deadLettered = outcome("dead_letter")
    }

    /// Deliveries (events, not requests) by outcome: `delivered`, `retry`, `dead_letter`.
    func record(_ decision: DeliveryOutcome.Decision, events: Int) {
        switch decision {
        case .delivered: delivered.increment(by: events)
        case .retry: retried.increment(by: events)
        case .deadLetter: deadLettered.increment(by: events)
        }
    }

    /// Removes a subscription's gauges, once it has left the config: a gauge left frozen at its last value would
    /// keep an alert on it firing for ever. Its counters stay, as counters do.
    static func remove(subscription: String) {
        for label in [
            "intilery_relay_circuit_open", "intilery_relay_subscription_paused", "intilery_relay_outbox_depth",
            "intilery_relay_outbox_oldest_age_seconds", "intilery_relay_dead_letters", "intilery_relay_requests_in_flight",
        ] {
            Gauge(label: label, dimensions: [("subscription", subscription)]).destroy()
        }
    }

    /// Reads each subscription's queue and dead letters from the store into their gauges. Called when `/metrics`
    /// is scraped, so that a gauge never lags the counters beside it; a failed read leaves the last values.
    static func refreshQueueGauges(
        store: StateStore, subscriptions: [String], now: Timestamp, stillCurrent: @Sendable (String) -> Bool
    ) async throws(StoreError) {
        let status = try await store.status(sources: [], subscriptions: subscriptions)
        // A reload during the read may have removed one (and its gauges): recording it would bring them back.
        for subscription in status.subscriptions where stillCurrent(subscription.name) {
            let age = subscription.oldestPendingEventTime.map { Double(now.millisecondsSinceEpoch - $0.millisecondsSinceEpoch) / 1000 } ?? 0
            SubscriptionMetrics(subscription: subscription.name).queue(
                pending: subscription.pending, oldestAgeSeconds: max(0, age), deadLetters: subscription.deadLetters)
        }
    }

    /// Requests in flight per dispatcher, read when scraped.
    static func refreshInFlight<C>(_ dispatchers: [String: Dispatcher<C>]) {
        for (name, dispatcher) in dispatchers {
            Gauge(label: "intilery_relay_requests_in_flight", dimensions: [("subscription", name)]).record(dispatcher.requestsInFlight)
        }
    }

    /// The queue gauges of a store shared by several instances (what every instance shows alike), read when
    /// scraped: each subscription's depth, oldest queued event's age, dead letters and pause; and this instance's
    /// requests in flight.
    public static func recordShared(
        subscription: String, pending: Int, oldestEventTime: Timestamp?, deadLetters: Int, paused: Bool, inFlight: Int, now: Timestamp
    ) {
        let age = oldestEventTime.map { Double(now.millisecondsSinceEpoch - $0.millisecondsSinceEpoch) / 1000 } ?? 0
        let metrics = SubscriptionMetrics(subscription: subscription)
        metrics.queue(pending: pending, oldestAgeSeconds: max(0, age), deadLetters: deadLetters)
        metrics.paused.record(paused ? 1 : 0)
        Gauge(label: "intilery_relay_requests_in_flight", dimensions: [("subscription", subscription)]).record(inFlight)
    }

    /// Outbox depth, oldest queued event's age, and dead letters.
    func queue(pending: Int, oldestAgeSeconds: Double, deadLetters: Int) {
        Gauge(label: "intilery_relay_outbox_depth", dimensions: [("subscription", name)]).record(pending)
        Gauge(label: "intilery_relay_outbox_oldest_age_seconds", dimensions: [("subscription", name)]).record(oldestAgeSeconds)
        Gauge(label: "intilery_relay_dead_letters", dimensions: [("subscription", name)]).record(deadLetters)
    }
}
