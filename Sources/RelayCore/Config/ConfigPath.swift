import RelayJSON

/// A JSON path as config errors print it: `sources[0].rateLimit.burst`, `webhook.headers["X Odd"]`.
struct ConfigPath: CustomStringConvertible {
    private(set) var description: String

    static let root = ConfigPath(description: "")

    func key(_ key: String) -> ConfigPath {
        let plain = !key.isEmpty && key.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-"
                || $0 == "$"
        }
        if !plain {
            var quoted = ""
            JSONWriter.writeString(key, to: &quoted)
            return ConfigPath(description: description + "[\(quoted)]")
        }
        return ConfigPath(description: description.isEmpty ? key : description + "." + key)
    }

    func index(_ index: Int) -> ConfigPath { ConfigPath(description: description + "[\(index)]") }
}
