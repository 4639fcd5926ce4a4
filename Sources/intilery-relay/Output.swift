#if canImport(Glibc)
import Glibc
#endif

/// Writes one line to standard error with a single write(2), so lines from several tasks never interleave.
func printToStandardError(_ line: String) {
    writeLine(line, to: STDERR_FILENO)
}

/// Writes one line to standard output at once, unbuffered: live views must show up even through a pipe.
func printLine(_ line: String) {
    writeLine(line, to: STDOUT_FILENO)
}

private func writeLine(_ line: String, to descriptor: Int32) {
    writeText(line + "\n", to: descriptor)
}

/// Writes all of `text`, through short writes and interruptions.
private func writeText(_ text: String, to descriptor: Int32) {
    var text = text
    text.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return }
            offset += written
        }
    }
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
enum Table {
    static func render(header: [String], rows: [[String]]) -> [String] {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.indices.map { column in
                column == row.count - 1 ? row[column] : row[column].padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
    }
}

/// "replayed 20000 of 120000" on a terminal's standard error, rewritten in place; nothing when it is not a
/// terminal (a script reads the final line on standard output).
struct Progress {
    var label = ""
    var total = 0
    let onTerminal = isatty(STDERR_FILENO) == 1

    func show(_ done: Int) { show("\(label) \(done) of \(total)") }

    func show(_ line: String) {
        guard onTerminal else { return }
        writeText("\r\u{1B}[K" + line, to: STDERR_FILENO)
    }

    func finish() {
        guard onTerminal else { return }
        writeText("\r\u{1B}[K", to: STDERR_FILENO)
    }
}
