import CBuildInfo
import CurlHTTP
import GRDBSQLite

/// The relay's version, sent in `user-agent` and printed by `--version`.
public enum RelayVersion {
    /// Semantic version of this build.
    public static let current = "0.1.0"

    /// The git commit the binary was built from (`make release` stamps it), else "unknown".
    public static var commit: String { String(cString: relay_build_commit()) }

    /// The compiler's language version, as far as this source can tell.
    public static var swift: String {
        #if compiler(>=6.4)
        return "6.4 or later"
        #elseif compiler(>=6.3)
        return "6.3"
        #elseif compiler(>=6.2)
        return "6.2"
        #elseif compiler(>=6.1)
        return "6.1"
        #else
        return "6.0"
        #endif
    }

    /// The SQLite library linked, as it reports itself at run time.
    public static var sqlite: String { String(cString: sqlite3_libversion()) }

    /// What `intilery-relay version` prints: enough to tell two builds apart in a bug report.
    public static var lines: [String] {
        [
            "intilery-relay \(current)",
            "commit \(commit)",
            "Swift \(swift)",
            "libcurl \(CurlHTTPClient.libraryVersion)",
            "SQLite \(sqlite)",
        ]
    }
}
