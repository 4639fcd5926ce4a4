/// What the fake API does wrong, and how often: each knob is a probability per request, 0 to 1.
public struct SimulatorFaults: Sendable, Equatable {
    /// Answer 500.
    public var internalError: Double = 0
    /// Answer 503.
    public var unavailable: Double = 0
    /// Answer 200 with a body that is not JSON.
    public var malformed: Double = 0
    /// Answer 200 with a `Content-Length` for the whole body, send part of it and close.
    public var truncated: Double = 0
    /// Delay every answer by this much.
    public var latency: Duration = .zero

    /// No faults.
    public init() {}

    /// Parses `error=0.1,unavailable=0.05,malformed=0.01,truncated=0.01,latency=50ms`; nil names the bad part.
    public init(parsing spec: String) throws(SimulatorSpecError) {
        for part in spec.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { throw SimulatorSpecError(part: String(part)) }
            if pair[0] == "latency" {
                guard let ms = Self.milliseconds(pair[1]) else { throw SimulatorSpecError(part: String(part)) }
                latency = .milliseconds(ms)
                continue
            }
            guard let probability = Double(pair[1]), (0...1).contains(probability) else {
                throw SimulatorSpecError(part: String(part))
            }
            switch pair[0] {
            case "error": internalError = probability
            case "unavailable": unavailable = probability
            case "malformed": malformed = probability
            case "truncated": truncated = probability
            default: throw SimulatorSpecError(part: String(part))
            }
        }
    }

    private static func milliseconds(_ text: String) -> Int64? {
        if text.hasSuffix("ms") { return Int64(text.dropLast(2)) }
        if text.hasSuffix("s"), let seconds = Double(text.dropLast()) { return Int64(seconds * 1000) }
        return nil
    }
}

/// A `--faults` part the simulator does not understand.
public struct SimulatorSpecError: Error, CustomStringConvertible {
    /// The offending `name=value`.
    public let part: String
    public var description: String {
        "bad fault \"\(part)\": use error=P, unavailable=P, malformed=P, truncated=P (P from 0 to 1) or latency=50ms"
    }
}
