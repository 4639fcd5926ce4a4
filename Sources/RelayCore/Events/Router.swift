import RelayJSON

/// Decides which subscriptions of a source each event goes to.
public struct Router: Sendable {
    private let subscriptions: [SubscriptionConfig]

    /// A router for the subscriptions of one source.
    public init(subscriptions: [SubscriptionConfig]) { self.subscriptions = subscriptions }

    /// The names of the subscriptions `event` matches, in config order.
    public func route(_ event: Event) -> [String] {
        var matched: [String] = []
        var root: JSONValue?
        for subscription in subscriptions {
            if !subscription.include.isEmpty && !subscription.include.contains(event.action) { continue }
            if subscription.exclude.contains(event.action) { continue }
            if let filter = subscription.filter {
                if root == nil { root = .object(event.fields) }
                guard filter.matches(root!) else { continue }
            }
            matched.append(subscription.name)
        }
        return matched
    }

    /// What to ask the API to filter, per docs/configuration.md (Subscriptions): `include=A` when every subscription includes exactly `["A"]`;
    /// else `exclude=` the actions that no subscription can match, when that set is known and not empty.
    public static func serverSideFilter(for subscriptions: [SubscriptionConfig]) -> (include: String?, exclude: [String]) {
        guard !subscriptions.isEmpty else { return (nil, []) }
        let includes = Set(subscriptions.map(\.include))
        if includes.count == 1, let only = includes.first, only.count == 1 {
            return (only[0], [])
        }
        // An action no subscription can match: excluded by every subscription that does not include everything.
        guard subscriptions.allSatisfy({ $0.include.isEmpty ? !$0.exclude.isEmpty : true }) else { return (nil, []) }
        var candidates = Set(subscriptions.flatMap { $0.exclude })
        for subscription in subscriptions {
            if subscription.include.isEmpty {
                candidates.formIntersection(subscription.exclude)
            } else {
                candidates.subtract(subscription.include.filter { !subscription.exclude.contains($0) })
            }
        }
        return (nil, candidates.sorted())
    }
}
