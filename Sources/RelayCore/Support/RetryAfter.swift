/// `Retry-After` (RFC 9110): delay-seconds, or an HTTP date in any of its three forms.
public enum RetryAfter {
    /// The wait the header asks for, measured from `now`; nil when absent or unreadable, zero for a past date.
    public static func parse(_ value: String?, now: Timestamp) -> Duration? {
        guard let value = value?.trimmingCharacters(in: " \t") else { return nil }
        if let seconds = Int64(value), seconds >= 0 { return .seconds(min(seconds, 365 * 86_400)) }
        guard let date = httpDate(value, now: now) else { return nil }
        let ms = max(0, date.millisecondsSinceEpoch - now.millisecondsSinceEpoch)
        return .milliseconds(ms)
    }

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// An HTTP date in any of the three forms RFC 9110 (5.6.7) requires recipients to accept:
    /// IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT` (a two-digit year
    /// more than 50 years ahead is taken as the past century's), and asctime `Sun Nov  6 08:49:37 1994`.
    static func httpDate(_ text: String, now: Timestamp? = nil) -> Timestamp? {
        let parts = text.split(separator: " ")
        let day: Int, monthName: Substring, year: Int, time: Substring
        if parts.count == 6, parts[0].hasSuffix(","), parts[5] == "GMT", let d = Int(parts[1]), let y = Int(parts[3]) {
            (day, monthName, year, time) = (d, parts[2], y, parts[4])
        } else if parts.count == 4, parts[0].hasSuffix(","), parts[3] == "GMT" {
            let date = parts[1].split(separator: "-")
            guard date.count == 3, let d = Int(date[0]), date[2].count == 2, let shortYear = Int(date[2]) else { return nil }
            let currentYear = Int(now.map { $0.iso8601.prefix(4) }.flatMap { Int($0) } ?? 2000)
            var y = currentYear / 100 * 100 + shortYear
            if y > currentYear + 50 { y -= 100 }
            (day, monthName, year, time) = (d, date[1], y, parts[2])
        } else if parts.count == 5, let d = Int(parts[2]), let y = Int(parts[4]) {
            (day, monthName, year, time) = (d, parts[1], y, parts[3])
        } else {
            return nil
        }
        guard let monthIndex = months.firstIndex(of: String(monthName)), time.count == 8, (1...31).contains(day),
            (1...9999).contains(year)
        else { return nil }
        let pad = { (value: Int, width: Int) in String(repeating: "0", count: max(0, width - String(value).count)) + String(value) }
        return Timestamp(iso8601: "\(pad(year, 4))-\(pad(monthIndex + 1, 2))-\(pad(day, 2))T\(time)Z")
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        String(drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }

    /// Percent-encodes for a URL query value: everything but RFC 3986 unreserved characters.
    var queryValueEncoded: String {
        var out = ""
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: ","):
                // The API splits exclude on commas: keep them literal.
                out += ","
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}
