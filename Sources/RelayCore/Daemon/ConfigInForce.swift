import Logging

/// What a relay does with the config it starts or reloads with, on either store: read it again, name the settings
/// that wait for a restart, and record its subscriptions (new places, names gone or back), logging each.
public enum ConfigInForce {
    /// Settings a running relay cannot change: the metrics listener is bound, the state directory locked (and, for
    /// SQLite, open), the store connected. Everything else applies at a reload.
    public static func settingsNeedingRestart(from old: RelayConfig, to new: RelayConfig) -> [String] {
        var settings: [String] = []
        if old.metrics != new.metrics { settings.append("metrics.listen") }
        if old.stateDirectory != new.stateDirectory { settings.append("stateDirectory") }
        if old.store != new.store { settings.append("store") }
        return settings
    }

    /// Writes a reload's outcome into `directory` for `intilery-relay reload`, when the daemon has one. The log has
    /// the outcome already, so a failure to write it costs only the waiter.
    public static func answer(_ answer: ReloadAnswer, in directory: String?, logger: Logger) {
        guard let directory else { return }
        do {
            try answer.write(directory: directory)
        } catch {
            logger.warning("cannot record the reload's outcome for intilery-relay reload", metadata: ["error": "\(error)"])
        }
    }

    /// The config as `file` has it now, or its problems (logged): the running one then stays.
    public static func reload(file: String, environment: [String: String], logger: Logger) -> Result<RelayConfig, ConfigError> {
        do {
            return .success(try ConfigLoader.load(file: file, environment: ConfigEnvironment(variables: environment)))
        } catch {
            logger.error("reload rejected: the config has problems; the running config stays", metadata: ["problems": .stringConvertible(error.problems.count)])
            for line in error.lines { logger.error("\(line)") }
            return .failure(error)
        }
    }

    /// Records `config`'s subscriptions: new ones get their place (`startFrom`); names the config dropped are
    /// reported as orphans, one line each, with their counts; names that came back, too.
    public static func record(
        _ config: RelayConfig, cursors: any SubscriptionCursorStore, orphans: any OrphanStore, now: Timestamp, logger: Logger
    ) async throws {
        for cursor in try await cursors.registerSubscriptions(config.subscriptions, now: now) {
            logger.notice(
                "new subscription: reading its events from startFrom on its own, then joining the shared poll",
                metadata: ["subscription": "\(cursor.subscription)", "from": "\(cursor.position?.iso8601 ?? "-")"])
        }
        let found = try await orphans.reconcileOrphans(current: config.subscriptions.map(\.name), now: now)
        for name in found.readopted {
            logger.notice("subscription is in the config again: its queued events and dead letters are its own again", metadata: ["subscription": "\(name)"])
        }
        for orphan in found.orphans {
            logger.warning(
                "subscription is no longer in the config: its events are kept, not sent, until orphanRetention",
                metadata: [
                    "subscription": "\(orphan.subscription)", "queued": .stringConvertible(orphan.queued), "dead_letters": .stringConvertible(orphan.deadLetters),
                    "since": "\(orphan.since.iso8601)", "deleted_at": "\(orphan.since.advanced(by: config.orphanRetention).iso8601)",
                ])
        }
    }
}
