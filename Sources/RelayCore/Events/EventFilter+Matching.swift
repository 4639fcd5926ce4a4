import RelayJSON

extension EventFilter {
    /// Whether an event passes, by docs/configuration.md's rules (Filters): an absent or null field matches nothing but `exists: false`;
    /// numbers compare by value and never equal booleans or strings; ordering compares numbers numerically and
    /// strings lexicographically, and mixed types never match.
    public func matches(_ event: JSONValue) -> Bool {
        switch self {
        case .all(let parts): return parts.allSatisfy { $0.matches(event) }
        case .any(let parts): return parts.contains { $0.matches(event) }
        case .not(let inner): return !inner.matches(event)
        case .condition(let path, let op, let operand):
            let found = event.value(at: path).flatMap { $0 == .null ? nil : $0 }
            if op == .exists { return (found != nil) == (operand == .bool(true)) }
            guard let value = found else { return false }
            return Self.compare(value, op, operand)
        }
    }

    private static func compare(_ value: JSONValue, _ op: FilterOperator, _ operand: JSONValue) -> Bool {
        switch op {
        case .eq: return value == operand
        case .ne: return value != operand
        case .in: return operand.arrayValue?.contains(value) ?? false
        case .nin: return !(operand.arrayValue?.contains(value) ?? false)
        case .gt, .gte, .lt, .lte:
            guard let order = order(value, operand) else { return false }
            switch op {
            case .gt: return order > 0
            case .gte: return order >= 0
            case .lt: return order < 0
            default: return order <= 0
            }
        case .contains:
            switch (value, operand) {
            case (.string(let text), .string(let part)): return text.contains(part)
            case (.array(let elements), _): return elements.contains(operand)
            default: return false
            }
        case .prefix:
            guard case .string(let text) = value, case .string(let prefix) = operand else { return false }
            return text.hasPrefix(prefix)
        case .exists:
            return true
        }
    }

    /// -1, 0 or 1 for two numbers or two strings; nil for anything else.
    private static func order(_ a: JSONValue, _ b: JSONValue) -> Int? {
        switch (a, b) {
        case (.number(let x), .number(let y)):
            if x == y { return 0 }
            return x.double < y.double ? -1 : 1
        case (.string(let x), .string(let y)):
            // Lexicographic by Unicode scalars, so the order does not depend on locale or normalisation.
            if x == y { return 0 }
            return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars) ? -1 : 1
        default:
            return nil
        }
    }
}
