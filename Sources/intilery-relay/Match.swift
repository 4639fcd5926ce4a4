import ArgumentParser
import Foundation
import RelayCore
import RelayJSON

/// Tries a subscription's `include`, `exclude` and `where` on events from a file or standard input, before deploying
/// them.
struct Match: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show which events a subscription selects, and which clause decided.",
        discussion: """
            Reads events from FILE (or standard input, or -): a page body in any shape the relay accepts (an array, \
            {"events": [...]}, the source's response overrides...), or one event per line. Prints, per event, \
            whether the subscription's include, exclude and where select it and the clause that decided. Needs none \
            of the config's secrets. Exit codes: 0, 64 no such subscription, 65 no event could be read, 66 the \
            file cannot be read, 78 config error.
            """
    )

    @Option(name: .long, help: ArgumentHelp("The JSON config file.", valueName: "file"))
    var config: String

    @Option(name: .long, help: ArgumentHelp("The subscription whose filters to try.", valueName: "name"))
    var subscription: String

    @Argument(help: ArgumentHelp("Events to try: a file, or - for standard input (the default).", valueName: "file"))
    var input: String = "-"

    @Flag(name: .long, help: "Print a JSON array: one object per event, with id, action, selected and decidedBy.")
    var json = false

    func run() throws {
        let loaded = try loadConfigWithoutSecrets(config)
        guard let chosen = loaded.subscriptions.first(where: { $0.name == subscription }) else {
            printToStandardError("intilery-relay match: no subscription named \(subscription) in \(config)")
            throw ExitCode(64)
        }
        let overrides = loaded.sources.first { $0.name == chosen.source }?.response
        let bytes: [UInt8]
        do {
            bytes = input == "-" ? Array(FileHandle.standardInput.readDataToEndOfFile()) : try FileBytes.read(input)
        } catch {
            printToStandardError("intilery-relay match: \(error)")
            throw ExitCode(66)
        }
        let (events, skipped) = Self.events(in: bytes, overrides: overrides)
        guard !events.isEmpty else {
            printToStandardError(
                "intilery-relay match: no event in \(input == "-" ? "standard input" : input): give a page body (an array, {\"events\": [...]}) or one event per line"
                    + (skipped > 0 ? "; \(skipped) unreadable (not JSON, or no id or time)" : ""))
            throw ExitCode(65)
        }
        let verdicts = events.map { chosen.verdict(for: $0) }
        if json {
            let objects = zip(events, verdicts).map { event, verdict in
                JSONValue.object(JSONObject([
                    ("id", .string(event.id)), ("action", .string(event.action)), ("selected", .bool(verdict.selected)),
                    ("decidedBy", .string(verdict.decidedBy)),
                ]))
            }
            printLine(JSONValue.array(objects).description)
            return
        }
        let rows = zip(events, verdicts).map { event, verdict in
            [verdict.selected ? "selected" : "not selected", event.id, event.action.isEmpty ? "-" : event.action, verdict.decidedBy]
        }
        for line in Table.render(header: ["VERDICT", "EVENT", "ACTION", "DECIDED BY"], rows: rows) { printLine(line) }
        let selected = verdicts.filter(\.selected).count
        printLine("\(subscription) selects \(selected) of \(events.count) events" + (skipped > 0 ? "; \(skipped) unreadable (not JSON, or no id or time)" : "") + ".")
    }

    /// The events of a page body, or else of one event per line (each read as a page of one: with the source's
    /// field overrides, but not its `eventsPath`, which a bare event does not have).
    static func events(in bytes: [UInt8], overrides: ResponseShapeOverrides?) -> (events: [Event], skipped: Int) {
        if let page = try? EventPageDecoder(overrides: overrides).decode(bytes), page.elementCount > 0 {
            return (page.events, page.skipped.values.reduce(0, +))
        }
        var fieldsOnly = overrides
        fieldsOnly?.eventsPath = nil
        let decoder = EventPageDecoder(overrides: fieldsOnly)
        var events: [Event] = []
        var skipped = 0
        for line in bytes.split(separator: UInt8(ascii: "\n")) where line.contains(where: { $0 > 32 }) {
            guard let page = try? decoder.decode(Array("[".utf8) + line + Array("]".utf8)) else {
                skipped += 1
                continue
            }
            events += page.events
            skipped += page.skipped.values.reduce(0, +)
        }
        return (events, skipped)
    }
}
