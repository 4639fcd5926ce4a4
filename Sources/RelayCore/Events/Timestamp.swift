/// A point in time at the Events API's precision: milliseconds since the Unix epoch, UTC.
public struct Timestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    public var millisecondsSinceEpoch: Int64

    /// Wraps a count of milliseconds since the epoch.
    public init(millisecondsSinceEpoch: Int64) { self.millisecondsSinceEpoch = millisecondsSinceEpoch }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        lhs.millisecondsSinceEpoch < rhs.millisecondsSinceEpoch
    }

    /// The times the relay can place: 1970-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z. An event stamped
    /// outside is skipped with a counted reason rather than stored, compared or formatted.
    public static let placeable: ClosedRange<Int64> = 0...253_402_300_799_999

    /// Whether ``placeable`` holds this time.
    public var isPlaceable: Bool { Self.placeable.contains(millisecondsSinceEpoch) }

    /// This time moved by a duration, rounded down to the millisecond; saturates instead of overflowing.
    public func advanced(by duration: Duration) -> Timestamp {
        let (seconds, attoseconds) = duration.components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        let delta = overflow ? (seconds < 0 ? Int64.min : Int64.max) : scaled &+ attoseconds / 1_000_000_000_000_000
        let (sum, sumOverflow) = millisecondsSinceEpoch.addingReportingOverflow(delta)
        return Timestamp(millisecondsSinceEpoch: sumOverflow ? (delta < 0 ? Int64.min : Int64.max) : sum)
    }

    /// The signed distance from `self` to `other`.
    public func duration(to other: Timestamp) -> Duration {
        .milliseconds(other.millisecondsSinceEpoch &- millisecondsSinceEpoch)
    }

    /// ISO-8601 in UTC with milliseconds, as the Events API writes times: `2019-11-18T13:30:11.444Z`.
    public var description: String { iso8601 }

    /// ISO-8601 in UTC with milliseconds.
    public var iso8601: String {
        let ms = millisecondsSinceEpoch
        let days = floorDivide(ms, 86_400_000)
        // Wrapping: for times near Int64's ends, days × 86,400,000 leaves the range though the difference does not.
        let msOfDay = ms &- days &* 86_400_000
        let (year, month, day) = Self.civilDate(fromDays: days)
        let hour = msOfDay / 3_600_000
        let minute = msOfDay / 60_000 % 60
        let second = msOfDay / 1000 % 60
        let milli = msOfDay % 1000
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(hour, 2)):\(pad(minute, 2)):\(pad(second, 2)).\(pad(milli, 3))Z"
    }

    /// Parses ISO-8601: a date (`2024-01-02`, midnight UTC) or a date-time with `T` or a space, optional seconds
    /// fraction (kept to the millisecond), and `Z` or an offset (`+01:00`, `+0100`, `+01`); no offset means UTC.
    public init?(iso8601 text: some StringProtocol) {
        var scanner = DigitScanner(Array(text.utf8))
        guard let year = scanner.digits(4), scanner.skip("-"), let month = scanner.digits(2), scanner.skip("-"),
            let day = scanner.digits(2), (1...12).contains(month), (1...Self.daysIn(month: month, year: year)).contains(day)
        else { return nil }
        var ms = Self.days(fromCivil: year, month, day) * 86_400_000
        if scanner.atEnd {
            self.init(millisecondsSinceEpoch: ms)
            return
        }
        guard scanner.skip("T") || scanner.skip("t") || scanner.skip(" "), let hour = scanner.digits(2), hour < 24,
            scanner.skip(":"), let minute = scanner.digits(2), minute < 60
        else { return nil }
        var second: Int64 = 0
        var milli: Int64 = 0
        if scanner.skip(":") {
            guard let s = scanner.digits(2), s < 61 else { return nil }
            second = s
            if scanner.skip(".") || scanner.skip(",") {
                guard let (fraction, count) = scanner.fraction() else { return nil }
                milli = count >= 3 ? fraction : fraction * [100, 10, 1][count - 1]
            }
        }
        ms += hour * 3_600_000 + minute * 60_000 + second * 1000 + milli
        if scanner.skip("Z") || scanner.skip("z") || scanner.atEnd {
            guard scanner.atEnd else { return nil }
            self.init(millisecondsSinceEpoch: ms)
            return
        }
        let sign: Int64
        if scanner.skip("+") { sign = 1 } else if scanner.skip("-") { sign = -1 } else { return nil }
        guard let offsetHours = scanner.digits(2), offsetHours < 24 else { return nil }
        var offsetMinutes: Int64 = 0
        if !scanner.atEnd {
            _ = scanner.skip(":")
            guard let m = scanner.digits(2), m < 60 else { return nil }
            offsetMinutes = m
        }
        guard scanner.atEnd else { return nil }
        self.init(millisecondsSinceEpoch: ms - sign * (offsetHours * 3_600_000 + offsetMinutes * 60_000))
    }

    // Howard Hinnant's days-from-civil algorithms: exact for the proleptic Gregorian calendar.
    static func days(fromCivil year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = floorDivide(y, 400)
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civilDate(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = floorDivide(z, 146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
}

/// Division rounding towards negative infinity, for positive `b`; never overflows.
private func floorDivide(_ a: Int64, _ b: Int64) -> Int64 {
    let quotient = a / b
    return a % b < 0 ? quotient - 1 : quotient
}

private func pad(_ value: Int64, _ width: Int) -> String {
    let text = String(value)
    return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
}

/// Reads fixed-width numbers and separators off ASCII bytes.
private struct DigitScanner {
    let bytes: [UInt8]
    var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { index == bytes.count }

    mutating func skip(_ character: Unicode.Scalar) -> Bool {
        guard index < bytes.count, bytes[index] == UInt8(ascii: character) else { return false }
        index += 1
        return true
    }

    mutating func digits(_ count: Int) -> Int64? {
        guard index + count <= bytes.count else { return nil }
        var value: Int64 = 0
        for byte in bytes[index..<index + count] {
            guard byte >= 48, byte <= 57 else { return nil }
            value = value * 10 + Int64(byte - 48)
        }
        index += count
        return value
    }

    /// Up to the first three fraction digits as a number, and how many of them there were; later digits are
    /// read and dropped.
    mutating func fraction() -> (Int64, Int)? {
        var value: Int64 = 0
        var count = 0
        while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
            if count < 3 { value = value * 10 + Int64(bytes[index] - 48) }
            count += 1
            index += 1
        }
        return count == 0 ? nil : (value, min(count, 3))
    }
}
