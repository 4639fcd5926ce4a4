/// Numbers subscription names in the order first given, remembering the numbers of the last list: a page's events
/// are mostly routed alike, so a run of them costs a look-up per name, where a dictionary keyed by name cost one per
/// event and name (nine per delivery between a page and its rows, a tenth of the writer's instructions with five
/// subscriptions).
struct NameNumbers {
    /// The names numbered so far; a name's number is its index.
    private(set) var names: [String] = []
    private var numberOf: [String: Int] = [:]
    private var last: (names: [String], numbers: [Int]) = ([], [])

    /// The numbers of `list`, in its order; names not seen before are numbered after the others.
    mutating func numbers(of list: [String]) -> [Int] {
        guard list != last.names else { return last.numbers }
        let numbers = list.map { name in
            if let number = numberOf[name] { return number }
            names.append(name)
            numberOf[name] = names.count - 1
            return names.count - 1
        }
        last = (list, numbers)
        return numbers
    }
}
