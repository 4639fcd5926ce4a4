/// One Events API account to poll.
public struct SourceConfig: Sendable, Equatable {
    /// Unique, `[a-z0-9_-]+`; used in the state store, metrics and logs.
    public var name: String
    /// Scheme and host of the API. Default `https://tracking.intilery.com`.
    public var baseURL: String = SourceConfig.defaultBaseURL
    /// The client id, as in the login URL.
    public var clientId: String
    /// The account id.
    public var accountId: String
    /// The brand id, usually the account id in upper case.
    public var brandId: String
    /// Sent as `auth-token`.
    public var authToken: Secret
    /// Where to begin when the store has no cursor for this source. Default: now.
    public var startFrom: StartPosition = .now
    /// The wait between polls once caught up. Default 5 s.
    public var pollInterval: Duration = .seconds(5)
    /// How late an event may become visible and still be delivered: the settle edge reads each range once more
    /// when it is this old. Zero turns the settle edge off. Default 60 s.
    public var lookback: Duration = .seconds(60)
    /// Events per page, 1 to 100. Default 100.
    public var pageSize: Int = 100
    /// Requests allowed to the API, shared by every source with the same token. Default: the API's limit.
    public var rateLimit: RateLimit = .intileryAPI
    /// Overrides for where events and their fields are in a response; `nil` accepts every known shape.
    public var response: ResponseShapeOverrides? = nil

    /// A source with the required fields; every other field has its default.
    public init(name: String, clientId: String, accountId: String, brandId: String, authToken: Secret) {
        self.name = name
        self.clientId = clientId
        self.accountId = accountId
        self.brandId = brandId
        self.authToken = authToken
    }

    /// The public Events API host.
    public static let defaultBaseURL = "https://tracking.intilery.com"

    /// `GET` this to read events.
    public var eventsURL: String {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        return "\(base)/track/\(clientId)/\(accountId)/\(brandId)/v1/events"
    }
}

/// Where a source begins without a stored cursor.
public enum StartPosition: Sendable, Equatable, CustomStringConvertible {
    /// Only events from the first start on.
    case now
    /// Everything the API still has.
    case earliest
    /// Events from this time on.
    case time(Timestamp)

    public var description: String {
        switch self {
        case .now: return "now"
        case .earliest: return "earliest"
        case .time(let time): return time.iso8601
        }
    }
}

/// Tells the decoder where a response keeps its events and their fields, when the defaults do not fit.
public struct ResponseShapeOverrides: Sendable, Equatable {
    /// A JSON pointer (RFC 6901) to the array of events, such as `/data/events`.
    public var eventsPath: String?
    /// A dot path to the event id within an event.
    public var idField: String?
    /// A dot path to the event time within an event.
    public var timestampField: String?
    /// A dot path to the action within an event.
    public var actionField: String?

    /// Overrides; `nil` leaves a default in place.
    public init(eventsPath: String? = nil, idField: String? = nil, timestampField: String? = nil, actionField: String? = nil) {
        self.eventsPath = eventsPath
        self.idField = idField
        self.timestampField = timestampField
        self.actionField = actionField
    }
}
