/// `Retry-After` (RFC 9110): delay-seconds, or an HTTP date (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`).
public enum RetryAfter {
    /// The wait the header asks for, measured from `now`; nil when absent or unreadable, zero for a past date.
    public static func parse(_ value: String?, now: Timestamp) -> Duration? {
        guard let value = value?.trimmingCharacters(in: " \t") else { return nil }
        if let seconds = Int64(value), seconds >= 0 { return .seconds(min(seconds, 365 * 86_400)) }
        guard let date = httpDate(value) else { return nil }
        let ms = max(0, date.millisecondsSinceEpoch - now.millisecondsSinceEpoch)
        return .milliseconds(ms)
    }

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    static func httpDate(_ text: String) -> Timestamp? {
        // "Sun, 06 Nov 1994 08:49:37 GMT"
        let parts = text.split(separator: " ")
        guard parts.count == 6, parts[0].hasSuffix(","), parts[5] == "GMT", let day = Int(parts[1]),
            let monthIndex = months.firstIndex(of: String(parts[2])), let year = Int(parts[3]), parts[4].count == 8
        else { return nil }
        let iso = "\(year)-\(monthIndex < 9 ? "0" : "")\(monthIndex + 1)-\(day < 10 ? "0" : "")\(day)T\(parts[4])Z"
        return Timestamp(iso8601: iso)
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
