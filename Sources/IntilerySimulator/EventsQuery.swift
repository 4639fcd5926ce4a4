/// The query parameters of one Events API request, validated as the real API does.
struct EventsQuery: Sendable {
    var include: String?
    var exclude: Set<String> = []
    var start: Int64?
    var end: Int64?
    var startInclusive = true
    var endInclusive = false
    var ascending = false
    var from = 0
    var size = 10

    /// The real API's result window: `from + size` may not pass it.
    static let window = 10_000

    func matches(action: String) -> Bool {
        if let include, include != action { return false }
        return !exclude.contains(action)
    }

    /// Parses query items; the error is the message of a 400.
    static func parse(_ items: [(name: String, value: String)]) -> Result<EventsQuery, QueryError> {
        var query = EventsQuery()
        for (name, value) in items {
            switch name {
            case "include":
                query.include = value.isEmpty ? nil : value
            case "exclude":
                query.exclude = Set(value.split(separator: ",").map { String($0) })
            case "start", "end":
                guard let time = ISOTimeParser.milliseconds(value) else {
                    return .failure(QueryError("\(name) must be an ISO 8601 date or time"))
                }
                if name == "start" { query.start = time } else { query.end = time }
            case "sort":
                guard value == "asc" || value == "desc" else { return .failure(QueryError("sort must be asc or desc")) }
                query.ascending = value == "asc"
            case "from":
                guard let from = Int(value), from >= 0 else {
                    return .failure(QueryError("from must be a non-negative integer"))
                }
                query.from = from
            case "size":
                guard let size = Int(value), (1...100).contains(size) else {
                    return .failure(QueryError("size must be an integer from 1 to 100"))
                }
                query.size = size
            default:
                continue
            }
        }
        if query.from + query.size > window {
            return .failure(QueryError("Result window is too large, from + size must be less than or equal to: [10000]"))
        }
        return .success(query)
    }
}

struct QueryError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// ISO-8601 as the API accepts it: date only, or date-time with optional fraction and offset.
enum ISOTimeParser {
    static func milliseconds(_ text: String) -> Int64? {
        let bytes = Array(text.utf8)
        var index = 0
        func number(_ count: Int) -> Int64? {
            guard index + count <= bytes.count else { return nil }
            var value: Int64 = 0
            for byte in bytes[index..<index + count] {
                guard (48...57).contains(byte) else { return nil }
                value = value * 10 + Int64(byte - 48)
            }
            index += count
            return value
        }
        func skip(_ character: UInt8) -> Bool {
            guard index < bytes.count, bytes[index] == character else { return false }
            index += 1
            return true
        }
        guard let year = number(4), skip(45), let month = number(2), skip(45), let day = number(2),
            (1...12).contains(month), (1...31).contains(day)
        else { return nil }
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
        var ms = days * 86_400_000
        if index == bytes.count { return ms }
        guard skip(84) || skip(32), let hour = number(2), skip(58), let minute = number(2), hour < 24, minute < 60
        else { return nil }
        ms += hour * 3_600_000 + minute * 60_000
        if skip(58) {
            guard let second = number(2), second < 61 else { return nil }
            ms += second * 1000
            if skip(46) {
                var digits = 0
                var fraction: Int64 = 0
                while index < bytes.count, (48...57).contains(bytes[index]) {
                    if digits < 3 { fraction = fraction * 10 + Int64(bytes[index] - 48) }
                    digits += 1
                    index += 1
                }
                guard digits > 0 else { return nil }
                if digits < 3 { for _ in digits..<3 { fraction *= 10 } }
                ms += fraction
            }
        }
        if index == bytes.count || (skip(90) && index == bytes.count) { return ms }
        let sign: Int64
        if skip(43) { sign = 1 } else if skip(45) { sign = -1 } else { return nil }
        guard let offsetHours = number(2) else { return nil }
        _ = skip(58)
        let offsetMinutes = index < bytes.count ? number(2) : 0
        guard let offsetMinutes, index == bytes.count else { return nil }
        return ms - sign * (offsetHours * 3_600_000 + offsetMinutes * 60_000)
    }
}
