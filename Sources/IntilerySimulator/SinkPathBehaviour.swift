/// How the receiver of `simulate` answers one path, from `--sink-path PATH=BEHAVIOUR`, so that a person can try
/// retries, dead letters and backoff by hand:
///
/// - `/bad=400`: always this status
/// - `/slow=delay:3s`: 200 after a delay (`/slow=503:delay=3s` for another status)
/// - `/busy=429:retry-after=1`: this status with a `Retry-After` in seconds
/// - `/flaky=500:p=0.3`: this status for that share of requests, 200 for the rest
/// - `/down=refuse`: the connection closed without an answer (one port cannot refuse one path's connections)
public struct SinkPathBehaviour: Sendable, Equatable {
    /// The request path, such as `/bad`.
    public var path: String
    /// What it answers.
    public var reply: ReceiverReply
    /// The share of requests that get `reply`; the rest get 200.
    public var probability: Double = 1

    public init(path: String, reply: ReceiverReply, probability: Double = 1) {
        self.path = path
        self.reply = reply
        self.probability = probability
    }

    /// Parses `PATH=BEHAVIOUR`; the error names the part it does not understand.
    public init(parsing text: String) throws(SinkPathBehaviourError) {
        let halves = text.split(separator: "=", maxSplits: 1).map(String.init)
        guard halves.count == 2, halves[0].hasPrefix("/") else { throw SinkPathBehaviourError(text: text, part: text) }
        path = halves[0]
        var parts = halves[1].split(separator: ":").map(String.init)
        guard let head = parts.first else { throw SinkPathBehaviourError(text: text, part: halves[1]) }
        parts.removeFirst()
        switch head {
        case "refuse", "close":
            guard parts.isEmpty else { throw SinkPathBehaviourError(text: text, part: parts[0]) }
            reply = .close
            return
        case "delay":
            guard parts.count == 1, let delay = Self.duration(parts[0]) else { throw SinkPathBehaviourError(text: text, part: halves[1]) }
            reply = .status(200, after: delay)
            return
        default:
            guard let status = Int(head), (100...599).contains(status) else { throw SinkPathBehaviourError(text: text, part: head) }
            var headers: [String: String] = [:]
            var delay = Duration.zero
            for option in parts {
                let pair = option.split(separator: "=", maxSplits: 1).map(String.init)
                guard pair.count == 2 else { throw SinkPathBehaviourError(text: text, part: option) }
                switch pair[0] {
                case "retry-after":
                    guard let seconds = Int(pair[1]), seconds >= 0 else { throw SinkPathBehaviourError(text: text, part: option) }
                    headers["retry-after"] = String(seconds)
                case "p":
                    guard let share = Double(pair[1]), (0...1).contains(share) else { throw SinkPathBehaviourError(text: text, part: option) }
                    probability = share
                case "delay":
                    guard let value = Self.duration(pair[1]) else { throw SinkPathBehaviourError(text: text, part: option) }
                    delay = value
                default:
                    throw SinkPathBehaviourError(text: text, part: option)
                }
            }
            reply = .status(status, headers: headers, after: delay)
        }
    }

    /// Sets the behaviour on `receiver`.
    public func apply(to receiver: WebhookReceiver) {
        if probability < 1 {
            receiver.flaky(path, probability: probability, reply: reply)
        } else {
            receiver.script(path, [], then: reply)
        }
    }

    /// What the startup banner says about this path.
    public var summary: String {
        let what: String
        switch reply {
        case .close: what = "closes the connection without an answer"
        case .neverAnswer: what = "never answers"
        case .statusWhenOpened(let status, _): what = "answers \(status) when a test lets it"
        case .status(let status, let headers, _, let delay):
            var text = "answers \(status)"
            if let retryAfter = headers["retry-after"] { text += " with Retry-After: \(retryAfter)" }
            if delay > .zero { text += " after \(delay)" }
            what = text
        }
        return probability < 1 ? "\(path) \(what) to \(Int((probability * 100).rounded()))% of requests, 200 to the rest" : "\(path) \(what)"
    }

    private static func duration(_ text: String) -> Duration? {
        if text.hasSuffix("ms"), let ms = Int64(text.dropLast(2)), ms >= 0 { return .milliseconds(ms) }
        if text.hasSuffix("s"), let seconds = Double(text.dropLast()), seconds >= 0, seconds < 3600 { return .milliseconds(Int64(seconds * 1000)) }
        return nil
    }
}

/// A `--sink-path` the simulator does not understand.
public struct SinkPathBehaviourError: Error, CustomStringConvertible {
    /// The whole argument.
    public let text: String
    /// The part not understood.
    public let part: String
    public var description: String {
        "bad --sink-path \"\(text)\" (at \"\(part)\"): use PATH=STATUS, PATH=delay:3s, PATH=429:retry-after=1, "
            + "PATH=500:p=0.3, PATH=503:delay=2s or PATH=refuse"
    }
}
