/// The config's duration strings: one or more `<number><unit>` parts, such as `"250ms"`, `"5s"`, `"1h30m"`,
/// `"1.5s"`, with units `ms`, `s`, `m`, `h`, `d`.
public enum DurationText {
    /// The duration written, or nil when the text is not of that form.
    public static func parse(_ text: String) -> Duration? {
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        var total = Duration.zero
        while !rest.isEmpty {
            let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            rest = rest.dropFirst(number.count)
            let unit = rest.prefix { $0.isASCII && $0.isLetter }
            rest = rest.dropFirst(unit.count)
            guard !number.isEmpty, let value = Double(number), value.isFinite else { return nil }
            let seconds: Double
            switch unit {
            case "ms": seconds = value / 1000
            case "s": seconds = value
            case "m": seconds = value * 60
            case "h": seconds = value * 3600
            case "d": seconds = value * 86400
            default: return nil
            }
            guard seconds < 1e9 else { return nil }
            total += .milliseconds(Int64((seconds * 1000).rounded()))
        }
        return total
    }

    /// The shortest exact text for a duration in the same units, such as `"90s"` or `"250ms"`.
    public static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        for (unit, size) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)]
        where ms != 0 && ms % size == 0 {
            return "\(ms / size)\(unit)"
        }
        return "\(ms)ms"
    }
}
