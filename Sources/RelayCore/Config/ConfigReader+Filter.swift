import RelayJSON

extension ConfigReader {
    /// A `where` node: `{"all": [...]}`, `{"any": [...]}`, `{"not": {...}}` or `{"path", "op", "value"}`.
    mutating func filter(_ value: JSONValue, at path: ConfigPath) -> EventFilter? {
        guard case .object(let fields) = value else {
            problem(path, "must be an object: {\"all\": [...]}, {\"any\": [...]}, {\"not\": {...}} or {\"path\", \"op\", \"value\"}")
            return nil
        }
        for combinator in ["all", "any", "not"] where fields[combinator] != nil {
            guard object(value, at: path, allowed: [combinator]) != nil, let inner = fields[combinator] else { return nil }
            return combine(combinator, inner, at: path.key(combinator))
        }
        guard fields["path"] != nil || fields["op"] != nil else {
            problem(path, "must have \"all\", \"any\", \"not\", or \"path\" and \"op\"")
            return nil
        }
        return condition(fields, at: path)
    }

    private mutating func combine(_ combinator: String, _ inner: JSONValue, at path: ConfigPath) -> EventFilter? {
        if combinator == "not" {
            return filter(inner, at: path).map(EventFilter.not)
        }
        guard case .array(let elements) = inner else {
            problem(path, "must be an array of filters, not \(inner.typeName)")
            return nil
        }
        let children = elements.enumerated().map { filter($0.element, at: path.index($0.offset)) }
        let valid = children.compactMap { $0 }
        guard valid.count == children.count else { return nil }
        return combinator == "all" ? .all(valid) : .any(valid)
    }

    private mutating func condition(_ fields: JSONObject, at path: ConfigPath) -> EventFilter? {
        guard object(.object(fields), at: path, allowed: ["path", "op", "value"]) != nil else { return nil }
        let problemsBefore = problems.count
        var fieldPath: FieldPath?
        if let text = string(fields, "path", at: path, required: true) {
            fieldPath = FieldPath(text)
            if fieldPath == nil { problem(path.key("path"), "must be a dot-separated path such as \"properties.total\"") }
        }
        let op = fields["op"] == nil ? nil : choice(fields, "op", at: path, as: FilterOperator.self)
        if fields["op"] == nil { problem(path.key("op"), "is required") }
        var operand = fields["value"]
        if let op {
            operand = checkOperand(op, operand, at: path.key("value"))
        }
        guard problems.count == problemsBefore, let fieldPath, let op, let operand else { return nil }
        return .condition(fieldPath, op, operand)
    }

    /// The operand an operator needs; `exists` defaults to `true`.
    private mutating func checkOperand(_ op: FilterOperator, _ operand: JSONValue?, at path: ConfigPath) -> JSONValue? {
        if op == .exists {
            guard let operand else { return .bool(true) }
            guard case .bool = operand else {
                problem(path, "must be true or false for op \"exists\"")
                return nil
            }
            return operand
        }
        guard let operand else {
            problem(path, "is required for op \"\(op.rawValue)\"")
            return nil
        }
        switch (op, operand) {
        case (_, .null):
            problem(path, "must not be null: a null or absent field matches nothing; use op \"exists\"")
        case (.in, .array), (.nin, .array):
            return operand
        case (.in, _), (.nin, _):
            problem(path, "must be an array for op \"\(op.rawValue)\"")
        case (.prefix, .string):
            return operand
        case (.prefix, _):
            problem(path, "must be a string for op \"prefix\"")
        case (.gt, .number), (.gte, .number), (.lt, .number), (.lte, .number),
            (.gt, .string), (.gte, .string), (.lt, .string), (.lte, .string):
            return operand
        case (.gt, _), (.gte, _), (.lt, _), (.lte, _):
            problem(path, "must be a number or a string for op \"\(op.rawValue)\"")
        default:
            return operand
        }
        return nil
    }
}
