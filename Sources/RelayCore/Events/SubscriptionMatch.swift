import RelayJSON

/// Whether a subscription selects an event, and which part of its config decided: what `intilery-relay match`
/// prints, so that a person can try a filter on real events before deploying it. Decides as ``Router`` does.
public struct MatchVerdict: Sendable, Equatable {
    public var selected: Bool
    /// The clause that decided, as the config writes it, with what the event held.
    public var decidedBy: String
}

extension SubscriptionConfig {
    public func verdict(for event: Event) -> MatchVerdict {
        let action = "\"\(event.action)\""
        if !include.isEmpty && !include.contains(event.action) {
            return MatchVerdict(selected: false, decidedBy: "include: the action \(action) is not one of \(include.joined(separator: ", "))")
        }
        if exclude.contains(event.action) {
            return MatchVerdict(selected: false, decidedBy: "exclude: names the action \(action)")
        }
        if let filter {
            let (selected, clause) = filter.explain(.object(event.fields))
            return MatchVerdict(selected: selected, decidedBy: "where: \(clause)")
        }
        if !include.isEmpty { return MatchVerdict(selected: true, decidedBy: "include: names the action \(action)") }
        if !exclude.isEmpty { return MatchVerdict(selected: true, decidedBy: "exclude: does not name the action \(action)") }
        return MatchVerdict(selected: true, decidedBy: "no include, exclude or where: every event")
    }
}

extension EventFilter {
    /// The filter as the summary and `match` print it: `(properties.total gte 500 and not action eq "page")`.
    public var summary: String {
        switch self {
        case .all(let parts): return parts.isEmpty ? "true" : "(" + parts.map(\.summary).joined(separator: " and ") + ")"
        case .any(let parts): return parts.isEmpty ? "false" : "(" + parts.map(\.summary).joined(separator: " or ") + ")"
        case .not(let inner): return "not \(inner.summary)"
        case .condition(let path, let op, let value): return "\(path) \(op.rawValue) \(value)"
        }
    }

    /// Whether the filter matches `event`, and the clause that decided: for `all`, the first part that fails
    /// (or the whole when none does); for `any`, the first part that matches (or the whole when none does).
    func explain(_ event: JSONValue) -> (matched: Bool, clause: String) {
        switch self {
        case .all(let parts):
            for part in parts {
                let (matched, clause) = part.explain(event)
                if !matched { return (false, clause) }
            }
            return (true, summary)
        case .any(let parts):
            for part in parts {
                let (matched, clause) = part.explain(event)
                if matched { return (true, clause) }
            }
            return (false, "none of \(summary)")
        case .not(let inner):
            let (matched, clause) = inner.explain(event)
            return (!matched, "not (\(clause))")
        case .condition(let path, _, _):
            let found = event.value(at: path).map { "\($0)" } ?? "no such field"
            return (matches(event), "\(summary) (the event has \(found))")
        }
    }
}
