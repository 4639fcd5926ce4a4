/// One event in the fake API's log. Compact, because benchmarks hold a million of them; the JSON is rendered from
/// these fields when a page is served, and every property is a pure function of `sequence`, so tests can predict
/// exactly what each event carries.
public struct SimulatedEvent: Sendable, Hashable {
    /// Unique and increasing in creation order; breaks ties between events of the same millisecond.
    public var sequence: Int
    /// Event time, milliseconds since the epoch.
    public var timestamp: Int64
    /// When the API starts returning it; later than `timestamp` for late-visible events.
    public var visibleAt: Int64
    /// Index into ``SimulatedEvent/actions``.
    public var actionIndex: UInt8
    /// The time field's JSON exactly as served (`1e19`, `"0000-00-00"`), in place of `timestamp` formatted; for
    /// testing what the relay does with times it cannot place. `timestamp` still orders the log.
    public var timestampJSON: String? = nil

    /// The actions generated, Segment-style: `identify` and `page` are types, the rest named track events.
    public static let actions = ["page", "identify", "email_click", "email_open", "purchase", "logged_in"]
    /// Campaign names carried in `properties.campaign`.
    public static let campaigns = ["spring", "summer", "autumn", "winter"]

    /// The action, such as `email_click`.
    public var action: String { Self.actions[Int(actionIndex)] }
    /// The event id as the API returns it.
    public var eventID: String { "evt-\(sequence)" }
    /// `properties.campaign`.
    public var campaign: String { Self.campaigns[sequence % Self.campaigns.count] }
    /// `properties.total`: a number with cents, 0.00 to 999.99.
    public var totalCents: Int { (sequence &* 7919) % 100_000 }
    /// `userId`: 1,000 users.
    public var userNumber: Int { (sequence &* 31) % 1000 }
    /// `properties.items.0.sku`.
    public var sku: String { "SKU-\(sequence % 50)" }
    /// `properties.items.0.qty`: 1 to 5.
    public var quantity: Int { sequence % 5 + 1 }
    /// `properties.vip`: true for one user in ten.
    public var isVIP: Bool { userNumber % 10 == 0 }

    /// Ascending event-time order, ties broken by sequence: the order the API pages in.
    static func ascending(_ a: SimulatedEvent, _ b: SimulatedEvent) -> Bool {
        (a.timestamp, a.sequence) < (b.timestamp, b.sequence)
    }
}
