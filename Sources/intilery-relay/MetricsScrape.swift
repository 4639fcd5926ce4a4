import CurlHTTP
import Foundation

/// One scrape of a relay's `/metrics`, parsed: enough of the Prometheus text format for `top` (samples with
/// labels; comments skipped).
struct MetricsScrape {
    struct Sample {
        let name: String
        let labels: [String: String]
        let value: Double

        func matches(_ name: String, _ matching: [String: String]) -> Bool {
            self.name == name && matching.allSatisfy { key, value in labels[key] == value }
        }
    }

    let samples: [Sample]

    init(text: String) {
        samples = text.split(separator: "\n").compactMap(Self.sample)
    }

    /// The sum of the samples named `name` whose labels include `matching`.
    func sum(_ name: String, _ matching: [String: String] = [:]) -> Double {
        samples.filter { $0.matches(name, matching) }.map(\.value).reduce(0, +)
    }

    /// The one sample's value, or nil when there is none.
    func value(_ name: String, _ matching: [String: String]) -> Double? {
        samples.first { $0.matches(name, matching) }?.value
    }

    /// Every value label `label` takes in samples of `name`, sorted.
    func labelValues(_ name: String, _ label: String) -> [String] {
        Array(Set(samples.filter { $0.name == name }.compactMap { $0.labels[label] })).sorted()
    }

    private static func sample(_ line: Substring) -> Sample? {
        guard !line.hasPrefix("#"), let space = line.lastIndex(of: " ") else { return nil }
        let head = line[..<space]
        guard let value = Double(line[line.index(after: space)...]) ?? (line.hasSuffix("NaN") ? Double.nan : nil) else { return nil }
        guard let brace = head.firstIndex(of: "{") else { return Sample(name: String(head), labels: [:], value: value) }
        var labels: [String: String] = [:]
        var rest = head[head.index(after: brace)...]
        while let equals = rest.firstIndex(of: "=") {
            let key = rest[..<equals].trimmingCharacters(in: CharacterSet(charactersIn: ", "))
            rest = rest[rest.index(after: equals)...]
            guard rest.first == "\"" else { break }
            rest = rest.dropFirst()
            var text = ""
            var escaped = false
            while let character = rest.first {
                rest = rest.dropFirst()
                if escaped {
                    text.append(character == "n" ? "\n" : character)
                    escaped = false
                } else if character == "\\" {
                    escaped = true
                } else if character == "\"" {
                    break
                } else {
                    text.append(character)
                }
            }
            labels[key] = text
        }
        return Sample(name: String(head[..<brace]), labels: labels, value: value)
    }
}

