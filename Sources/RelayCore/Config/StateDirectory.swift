/// Where the state lives, by SPEC.md's order: `--state-dir`, else `stateDirectory` in the config, else
/// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`), else `./state`.
public enum StateDirectory {
    /// The directory to use.
    public static func resolve(flag: String?, config: RelayConfig, environment: [String: String]) -> String {
        if let flag, !flag.isEmpty { return flag }
        if let configured = config.stateDirectory { return configured }
        // systemd may list several directories separated by colons; the first is ours.
        if let fromSystemd = environment["STATE_DIRECTORY"]?.split(separator: ":").first { return String(fromSystemd) }
        return "./state"
    }
}
