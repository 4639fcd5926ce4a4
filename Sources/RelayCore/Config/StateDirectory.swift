import RelayJSON

/// Where the state lives, in the order docs/configuration.md gives: `--state-dir`, else `stateDirectory` in the config, else
/// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`), else `./state`.
public enum StateDirectory {
    /// The directory to use.
    public static func resolve(flag: String?, config: RelayConfig, environment: [String: String]) -> String {
        resolve(flag: flag, configured: config.stateDirectory, environment: environment)
    }

    /// The directory to use, given the config's `stateDirectory` (nil when it has none).
    public static func resolve(flag: String?, configured: String?, environment: [String: String]) -> String {
        if let flag, !flag.isEmpty { return flag }
        if let configured { return configured }
        // systemd may list several directories separated by colons; the first is ours.
        if let fromSystemd = environment["STATE_DIRECTORY"]?.split(separator: ":").first { return String(fromSystemd) }
        return "./state"
    }
}

extension ConfigLoader {
    /// The file's `stateDirectory`, read without validating anything else: `reload` must find the daemon even when
    /// the config it is about to report as rejected is broken elsewhere. Nil when the key or the JSON is missing.
    public static func stateDirectoryKey(file: String) -> String? {
        guard let bytes = try? FileBytes.read(file), let document = try? JSONParser.parse(bytes) else { return nil }
        return document.objectValue?["stateDirectory"]?.stringValue
    }
}
