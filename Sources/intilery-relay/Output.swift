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
    var text = line
    text += "\n"
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
