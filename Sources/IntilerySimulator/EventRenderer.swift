/// Renders events and pages as JSON bytes, appending straight into a buffer: the simulator must serve thousands of
/// pages a second on two cores without being what the benchmark measures.
struct EventRenderer {
    var naming: FieldNaming
    var shape: ResponseShape

    func page(_ events: [SimulatedEvent], total: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 + events.count * 420)
        switch shape {
        case .array: break
        case .events: out.append(contentsOf: #"{"events":"#.utf8)
        case .data: out.append(contentsOf: #"{"data":"#.utf8)
        case .results: out.append(contentsOf: #"{"total":\#(total),"results":"#.utf8)
        case .items: out.append(contentsOf: #"{"items":"#.utf8)
        case .elasticsearch: out.append(contentsOf: #"{"took":1,"hits":{"total":\#(total),"hits":"#.utf8)
        case .custom: out.append(contentsOf: #"{"meta":{"count":\#(events.count)},"payload":{"list":"#.utf8)
        }
        out.append(UInt8(ascii: "["))
        for (index, event) in events.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            if shape == .elasticsearch {
                out.append(contentsOf: #"{"_index":"events","_id":""#.utf8)
                out.append(contentsOf: event.eventID.utf8)
                out.append(contentsOf: #"","_source":"#.utf8)
                render(event, into: &out, includeID: false)
                out.append(UInt8(ascii: "}"))
            } else {
                render(event, into: &out, includeID: true)
            }
        }
        out.append(UInt8(ascii: "]"))
        switch shape {
        case .array: break
        case .elasticsearch, .custom: out.append(contentsOf: "}}".utf8)
        default: out.append(UInt8(ascii: "}"))
        }
        return out
    }

    /// One event object. Field order varies with the naming so that nothing relies on order.
    func render(_ event: SimulatedEvent, into out: inout [UInt8], includeID: Bool) {
        let action = event.action
        let isTrack = action != "page" && action != "identify"
        out.append(UInt8(ascii: "{"))
        if shape == .custom {
            out.append(contentsOf: #""meta":{"ref":""#.utf8)
            out.append(contentsOf: event.eventID.utf8)
            out.append(contentsOf: #""},"occurred":""#.utf8)
            appendISO(event.timestamp, into: &out, fraction: 3, zulu: true)
            out.append(contentsOf: #"","kind":""#.utf8)
            out.append(contentsOf: action.utf8)
            out.append(UInt8(ascii: "\""))
        } else {
            switch naming {
            case .canonical:
                if includeID { field("eventID", event.eventID, into: &out) }
                if let raw = event.timestampJSON {
                    out.append(contentsOf: #""timestamp":"#.utf8)
                    out.append(contentsOf: raw.utf8)
                    out.append(UInt8(ascii: ","))
                } else {
                    out.append(contentsOf: #""timestamp":""#.utf8)
                    appendISO(event.timestamp, into: &out, fraction: 3, zulu: true)
                    out.append(contentsOf: #"","#.utf8)
                }
                field("action", action, into: &out)
                field("type", isTrack ? "track" : action, into: &out)
                if isTrack { field("event", action, into: &out) }
            case .camel:
                out.append(contentsOf: #""date":""#.utf8)
                appendISO(event.timestamp, into: &out, fraction: 0, zulu: false)
                out.append(contentsOf: #"","#.utf8)
                field("event", action, into: &out)
                if includeID { field("eventId", event.eventID, into: &out) }
            case .snake:
                field("type", action, into: &out)
                if includeID { field("event_id", event.eventID, into: &out) }
                out.append(contentsOf: #""receivedAt":"#.utf8)
                out.append(contentsOf: String(event.timestamp).utf8)
                out.append(UInt8(ascii: ","))
            case .segment:
                if includeID { field("messageId", event.eventID, into: &out) }
                field("type", isTrack ? "track" : action, into: &out)
                if isTrack { field("event", action, into: &out) }
                out.append(contentsOf: #""createdAt":""#.utf8)
                appendISO(event.timestamp, into: &out, fraction: 6, zulu: true)
                out.append(contentsOf: #"","#.utf8)
            }
            out.removeLast()  // the trailing comma of the last field
        }
        let user = String(event.userNumber)
        out.append(contentsOf: #","userId":"user-"#.utf8)
        out.append(contentsOf: user.utf8)
        out.append(contentsOf: #"","anonymousId":"anon-"#.utf8)
        out.append(contentsOf: user.utf8)
        out.append(contentsOf: #"","properties":{"campaign":""#.utf8)
        out.append(contentsOf: event.campaign.utf8)
        out.append(contentsOf: #"","total":"#.utf8)
        let cents = event.totalCents
        out.append(contentsOf: String(cents / 100).utf8)
        out.append(UInt8(ascii: "."))
        out.append(UInt8(ascii: "0") + UInt8(cents % 100 / 10))
        out.append(UInt8(ascii: "0") + UInt8(cents % 10))
        out.append(contentsOf: #","vip":"#.utf8)
        out.append(contentsOf: (event.isVIP ? "true" : "false").utf8)
        out.append(contentsOf: #","email":"user"#.utf8)
        out.append(contentsOf: user.utf8)
        out.append(contentsOf: #"@example.com","items":[{"sku":""#.utf8)
        out.append(contentsOf: event.sku.utf8)
        out.append(contentsOf: #"","qty":"#.utf8)
        out.append(contentsOf: String(event.quantity).utf8)
        out.append(contentsOf: #"}],"note":"caf\u00e9 \"quoted\""},"context":{"library":{"name":"intilery-simulator"}}}"#.utf8)
    }

    private func field(_ name: String, _ value: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: name.utf8)
        out.append(contentsOf: #"":""#.utf8)
        out.append(contentsOf: value.utf8)
        out.append(contentsOf: #"","#.utf8)
    }
}

/// Appends an ISO-8601 UTC time with `fraction` digits (0, 3 or 6) and `Z` or `+00:00`.
func appendISO(_ milliseconds: Int64, into out: inout [UInt8], fraction: Int, zulu: Bool) {
    let days = milliseconds >= 0 ? milliseconds / 86_400_000 : (milliseconds - 86_399_999) / 86_400_000
    let msOfDay = milliseconds - days * 86_400_000
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
    func digits(_ value: Int64, _ count: Int) {
        var divisor: Int64 = 1
        for _ in 1..<count { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            out.append(UInt8(ascii: "0") + UInt8(rest / divisor % 10))
            rest %= divisor
            divisor /= 10
        }
    }
    digits(year, 4)
    out.append(UInt8(ascii: "-"))
    digits(month, 2)
    out.append(UInt8(ascii: "-"))
    digits(day, 2)
    out.append(UInt8(ascii: "T"))
    digits(msOfDay / 3_600_000, 2)
    out.append(UInt8(ascii: ":"))
    digits(msOfDay / 60_000 % 60, 2)
    out.append(UInt8(ascii: ":"))
    digits(msOfDay / 1000 % 60, 2)
    if fraction >= 3 {
        out.append(UInt8(ascii: "."))
        digits(msOfDay % 1000, 3)
        if fraction == 6 { out.append(contentsOf: "000".utf8) }
    }
    out.append(contentsOf: (zulu ? "Z" : "+00:00").utf8)
}
