import Foundation
import RelayJSON

/// Walks a parsed config, collecting every problem instead of stopping at the first, and builds the typed
/// values of what is valid. Each section has its own extension (`ConfigReader+Sources.swift`, ...).
struct ConfigReader {
    var environment: ConfigEnvironment
    private(set) var problems: [ConfigProblem] = []

    init(environment: ConfigEnvironment) { self.environment = environment }

    mutating func problem(_ path: ConfigPath, _ rule: String) {
        problems.append(ConfigProblem(path: path.description, rule: rule))
    }

    // MARK: - Objects and keys

    /// The object at `path`, after reporting duplicate and unknown keys.
    mutating func object(_ value: JSONValue, at path: ConfigPath, allowed: [String]) -> JSONObject? {
        guard case .object(let object) = value else {
            problem(path, "must be an object, not \(value.typeName)")
            return nil
        }
        var seen = Set<String>()
        for key in object.keys {
            if !seen.insert(key).inserted {
                problem(path.key(key), "duplicate key")
            } else if !allowed.contains(key) {
                problem(path.key(key), "unknown key" + Self.suggestion(for: key, among: allowed))
            }
        }
        return object
    }

    /// ` (did you mean "x"?)` when a known key is a likely intent.
    static func suggestion(for key: String, among allowed: [String]) -> String {
        let lower = key.lowercased()
        let best = allowed.filter { !$0.hasPrefix("$") }.map { ($0, editDistance(lower, $0.lowercased())) }.min { $0.1 < $1.1 }
        guard let best, best.1 <= max(1, min(2, key.count / 3)) else { return "" }
        return " (did you mean \"\(best.0)\"?)"
    }

    private static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in stride(from: 1, through: b.count, by: 1) {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return a.isEmpty ? b.count : previous[b.count]
    }

    /// Reports a missing required key; returns the value when present.
    mutating func required(_ object: JSONObject, _ key: String, at path: ConfigPath) -> JSONValue? {
        guard let value = object[key] else {
            problem(path.key(key), "is required")
            return nil
        }
        return value
    }

    // MARK: - Scalars

    mutating func string(_ value: JSONValue, at path: ConfigPath) -> String? {
        guard case .string(let text) = value else {
            problem(path, "must be a string, not \(value.typeName)")
            return nil
        }
        guard !text.isEmpty else {
            problem(path, "must not be empty")
            return nil
        }
        return text
    }

    mutating func string(_ object: JSONObject, _ key: String, at path: ConfigPath, required: Bool = false) -> String? {
        guard let value = required ? self.required(object, key, at: path) : object[key] else { return nil }
        return string(value, at: path.key(key))
    }

    mutating func integer(_ object: JSONObject, _ key: String, at path: ConfigPath, in range: ClosedRange<Int>) -> Int? {
        guard let value = object[key] else { return nil }
        let rule = "must be an integer from \(range.lowerBound) to \(range.upperBound)"
        guard case .number(let number) = value, let integer = number.integer ?? exactInteger(number.double) else {
            problem(path.key(key), value.typeName == "a number" ? rule : "\(rule), not \(value.typeName)")
            return nil
        }
        guard range.contains(integer) else {
            problem(path.key(key), rule)
            return nil
        }
        return integer
    }

    private func exactInteger(_ double: Double) -> Int? {
        double.rounded() == double && abs(double) < 1e15 ? Int(double) : nil
    }

    mutating func number(_ object: JSONObject, _ key: String, at path: ConfigPath, in range: ClosedRange<Double>) -> Double? {
        guard let value = object[key] else { return nil }
        guard case .number(let number) = value, range.contains(number.double) else {
            problem(path.key(key), "must be a number from \(format(range.lowerBound)) to \(format(range.upperBound))")
            return nil
        }
        return number.double
    }

    private func format(_ number: Double) -> String {
        number.rounded() == number ? String(Int(number)) : String(number)
    }

    mutating func duration(
        _ object: JSONObject, _ key: String, at path: ConfigPath, in range: ClosedRange<Duration>
    ) -> Duration? {
        guard let value = object[key] else { return nil }
        guard case .string(let text) = value, let duration = DurationText.parse(text) else {
            problem(path.key(key), "must be a duration such as \"250ms\", \"5s\", \"10m\", \"24h\" or \"30d\"")
            return nil
        }
        if duration < range.lowerBound {
            problem(path.key(key), "must be at least \(DurationText.format(range.lowerBound))")
            return nil
        }
        if duration > range.upperBound {
            problem(path.key(key), "must be at most \(DurationText.format(range.upperBound))")
            return nil
        }
        return duration
    }

    mutating func choice<Choice: RawRepresentable & CaseIterable>(
        _ object: JSONObject, _ key: String, at path: ConfigPath, as type: Choice.Type
    ) -> Choice? where Choice.RawValue == String {
        guard let value = object[key] else { return nil }
        guard case .string(let text) = value, let choice = Choice(rawValue: text) else {
            let names = Choice.allCases.map { "\"\($0.rawValue)\"" }
            problem(path.key(key), "must be one of " + names.joined(separator: ", "))
            return nil
        }
        return choice
    }

    mutating func stringList(_ object: JSONObject, _ key: String, at path: ConfigPath) -> [String]? {
        guard let value = object[key] else { return nil }
        guard case .array(let elements) = value else {
            problem(path.key(key), "must be an array of strings, not \(value.typeName)")
            return nil
        }
        var strings: [String] = []
        for (index, element) in elements.enumerated() {
            if let text = string(element, at: path.key(key).index(index)) { strings.append(text) }
        }
        return strings.count == elements.count ? strings : nil
    }

    /// An `http` or `https` URL with a host.
    mutating func httpURL(_ object: JSONObject, _ key: String, at path: ConfigPath, required: Bool = false) -> String? {
        guard let text = string(object, key, at: path, required: required) else { return nil }
        return httpURL(text, at: path.key(key))
    }

    /// `text` when it is an `http` or `https` URL with a host; a problem at `path` otherwise.
    mutating func httpURL(_ text: String, at path: ConfigPath) -> String? {
        guard Self.isHTTPURL(text) else {
            problem(path, "must be an http or https URL")
            return nil
        }
        return text
    }

    static func isHTTPURL(_ text: String) -> Bool {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = components.host, !host.isEmpty
        else { return false }
        return true
    }

    /// Scheme, host and port only: the relay appends the API's whole path, so any path, query or fragment here
    /// would be sent twice (`/track/track/...`) or dropped.
    mutating func originURL(_ object: JSONObject, _ key: String, at path: ConfigPath) -> String? {
        guard let text = httpURL(object, key, at: path), let components = URLComponents(string: text) else { return nil }
        let rest = components.percentEncodedPath
        guard rest.isEmpty || rest == "/", components.query == nil, components.fragment == nil, components.user == nil,
            components.password == nil
        else {
            problem(path.key(key), "must be the scheme, host and port only (such as \"https://tracking.intilery.com\"): the relay adds /track/...")
            return nil
        }
        return text
    }

    /// A name made only of the given characters.
    mutating func name(
        _ object: JSONObject, _ key: String, at path: ConfigPath, pattern: String, allowed: (Unicode.Scalar) -> Bool,
        maxLength: Int = 100
    ) -> String? {
        guard let text = string(object, key, at: path, required: true) else { return nil }
        guard text.unicodeScalars.allSatisfy(allowed), text.count <= maxLength else {
            problem(path.key(key), "must match \(pattern) and be at most \(maxLength) characters")
            return nil
        }
        return text
    }

    mutating func rateLimit(_ object: JSONObject, _ key: String, at path: ConfigPath, defaults: RateLimit) -> RateLimit? {
        guard let value = object[key] else { return nil }
        let path = path.key(key)
        guard let fields = self.object(value, at: path, allowed: ["perSecond", "burst"]) else { return nil }
        let problemsBefore = problems.count
        let perSecond = number(fields, "perSecond", at: path, in: 0.001...1_000_000)
        let burst = integer(fields, "burst", at: path, in: 1...1_000_000)
        guard problems.count == problemsBefore else { return nil }
        return RateLimit(perSecond: perSecond ?? defaults.perSecond, burst: burst ?? defaults.burst)
    }
}

extension Unicode.Scalar {
    var isASCIILowerOrDigit: Bool { ("a"..."z").contains(self) || ("0"..."9").contains(self) }
    var isASCIILetterOrDigit: Bool { isASCIILowerOrDigit || ("A"..."Z").contains(self) }
}
