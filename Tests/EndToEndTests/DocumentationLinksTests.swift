import Foundation
import Testing

/// The README and docs/ are what a user of the repository reads: every relative link must land on a file in the
/// repository (and an anchor on a heading of it), and nothing may point outside it.
@Suite struct DocumentationLinksTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().standardizedFileURL

    /// Where the planning notes live beside the checkout, spelled so that this file does not cite it.
    static let notesFolder = "../" + "shared"

    static var documents: [URL] {
        let docs = (try? FileManager.default.contentsOfDirectory(
            at: repository.appendingPathComponent("docs"), includingPropertiesForKeys: nil)) ?? []
        return [repository.appendingPathComponent("README.md")] + docs.filter { $0.pathExtension == "md" }.sorted { $0.path < $1.path }
    }

    /// `[text](target)` targets, code spans and fenced blocks left out.
    static func links(in markdown: String) -> [String] {
        var links: [String] = []
        var inFence = false
        for line in markdown.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.trimmingCharacters(in: .whitespaces).hasPrefix("```") { inFence.toggle() }
            if inFence { continue }
            let text = line.replacing(/`[^`]*`/, with: "")
            for match in text.matches(of: /\]\(([^)\s]+)(?:\s+"[^"]*")?\)/) { links.append(String(match.output.1)) }
        }
        return links
    }

    /// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
    static func anchors(in markdown: String) -> Set<String> {
        var anchors: Set<String> = []
        var inFence = false
        for line in markdown.split(separator: "\n") {
            if line.hasPrefix("```") { inFence.toggle() }
            guard !inFence, line.hasPrefix("#") else { continue }
            let title = line.drop { $0 == "#" }.trimmingCharacters(in: .whitespaces).lowercased()
            let kept = title.unicodeScalars.filter { CharacterSet.alphanumerics.contains($0) || $0 == " " || $0 == "-" || $0 == "_" }
            anchors.insert(String(String.UnicodeScalarView(kept)).replacingOccurrences(of: " ", with: "-"))
        }
        return anchors
    }

    @Test func thereAreDocsToCheck() {
        let names = Set(Self.documents.map(\.lastPathComponent))
        #expect(names.isSuperset(of: ["README.md", "configuration.md", "operations.md", "architecture.md"]))
    }

    @Test func everyLinkResolvesInsideTheRepository() throws {
        var checked = 0
        for document in Self.documents {
            let markdown = try String(contentsOf: document, encoding: .utf8)
            let name = document.path.dropFirst(Self.repository.path.count + 1)
            #expect(!markdown.contains(Self.notesFolder), "\(name) refers to \(Self.notesFolder), which users of the repository do not have")
            for link in Self.links(in: markdown) {
                if link.hasPrefix("https://") || link.hasPrefix("http://") || link.hasPrefix("mailto:") { continue }
                checked += 1
                let parts = link.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                let target = parts[0].isEmpty ? document : URL(fileURLWithPath: parts[0], relativeTo: document.deletingLastPathComponent()).standardizedFileURL
                #expect(!link.hasPrefix("/") && !link.hasPrefix("file:"), "\(name): \(link) is an absolute path")
                #expect(target.path.hasPrefix(Self.repository.path + "/"), "\(name): \(link) points outside the repository")
                #expect(FileManager.default.fileExists(atPath: target.path), "\(name): \(link) does not exist")
                if parts.count == 2, target.pathExtension == "md", let text = try? String(contentsOf: target, encoding: .utf8) {
                    #expect(Self.anchors(in: text).contains(parts[1]), "\(name): \(link): no such heading")
                }
            }
        }
        #expect(checked >= 10, "only \(checked) relative links: is the link pattern still right?")
    }

    /// Comments cite the repository's documents: the planning notes the project began from are not in it.
    @Test func sourcesCiteOnlyDocumentsInTheRepository() throws {
        var files = 0
        for folder in ["Sources", "Tests", "scripts", "packaging", "config", "systemd"] {
            let root = Self.repository.appendingPathComponent(folder)
            guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil) else { continue }
            for case let file as URL in walker where !file.hasDirectoryPath {
                guard let text = try? String(contentsOf: file, encoding: .utf8) else { continue }
                files += 1
                let name = file.path.dropFirst(Self.repository.path.count + 1)
                for outside in ["SPEC" + ".md", "DESIGN" + ".md", "POSTGRES" + ".md", Self.notesFolder] {
                    #expect(!text.contains(outside), "\(name) cites \(outside), which is not in the repository")
                }
            }
        }
        #expect(files > 50, "only \(files) files read")
    }

    @Test func theCheckerCatchesWhatItShould() {
        #expect(Self.links(in: "see [a](docs/x.md#y) and `[b](no.md)`\n```\n[c](fenced.md)\n```\n[d](e.md \"title\")") == ["docs/x.md#y", "e.md"])
        #expect(Self.anchors(in: "# Install\n## Trying things by hand\n### `reload`: waits!") == ["install", "trying-things-by-hand", "reload-waits"])
    }
}
