#if canImport(Glibc)
import Glibc
#endif

/// Writes one line to standard error with a single write(2), so lines from several tasks never interleave.
func printToStandardError(_ line: String) {
    var text = line
    text += "\n"
    text.withUTF8 { bytes in _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
}
