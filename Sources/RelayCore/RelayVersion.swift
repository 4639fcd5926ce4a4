/// The relay's version, sent in `user-agent` and printed by `--version`.
public enum RelayVersion {
    /// Semantic version of this build.
    public static let current = "0.1.0"
}
