import CurlHTTP
import RelayJSON

extension RelayConfig {
    /// One paragraph for `check-config`: every source and subscription and where each one goes. Secrets show as
    /// `<set>` and webhook URLs as scheme and host only, since a catch-hook path is itself a secret.
    public func summary(file: String) -> String {
        var sentences = ["\(file) is valid."]
        for source in sources {
            sentences.append(
                "Source \(source.name) polls \(source.eventsURL) every \(DurationText.format(source.pollInterval))"
                    + " (lookback \(DurationText.format(source.lookback)), \(source.pageSize) per page,"
                    + " \(Self.rate(source.rateLimit)), token \(source.authToken)), starting from \(source.startFrom)."
            )
        }
        for subscription in subscriptions {
            let webhook = subscription.webhook
            var details = ["\(webhook.payload.rawValue) payload"]
            details.append(webhook.batchSize > 1 ? "batches of up to \(webhook.batchSize)" : "one event per request")
            details.append(
                webhook.ordering == .strict ? "strictly in order" : "up to \(webhook.concurrency) in flight")
            details.append(webhook.signingKey == nil ? "unsigned" : "signed")
            if !webhook.headers.isEmpty {
                details.append("headers " + webhook.headers.map { "\($0.name): \($0.value)" }.joined(separator: ", "))
            }
            if let limit = webhook.rateLimit { details.append(Self.rate(limit)) }
            details.append(
                "retried up to \(webhook.retry.maxAttempts) times over \(DurationText.format(webhook.retry.maxAge))")
            let filter = subscription.filter.map { " where \($0.summary)" } ?? ""
            sentences.append(
                "Subscription \(subscription.name) sends \(subscription.source)'s \(Self.actions(subscription))\(filter)"
                    + " to \(RedactedURL(webhook.url))\(Self.pathMarker(webhook.url)) (\(details.joined(separator: ", ")))."
            )
        }
        let state = stateDirectory.map { "State in \($0)" } ?? "State in --state-dir, $STATE_DIRECTORY or ./state"
        let metrics = metrics.listen.map { "metrics on \($0)" } ?? "metrics off"
        sentences.append(
            "\(state); \(metrics); dead letters kept \(DurationText.format(deadLetters.retention));"
                + " a removed subscription's events kept \(DurationText.format(orphanRetention));"
                + " shutdown grace \(DurationText.format(shutdownGrace)).")
        let stopping = shutdownGrace + SystemdNotifier.stopMargin
        if stopping > SystemdNotifier.shippedUnitStopTimeout {
            sentences.append(
                "Note: stopping may take up to \(DurationText.format(stopping)), more than the shipped unit's"
                    + " TimeoutStopSec=\(DurationText.format(SystemdNotifier.shippedUnitStopTimeout)); the relay asks systemd for the"
                    + " extra time when it stops (EXTEND_TIMEOUT_USEC, systemd 236 or later), or set TimeoutStopSec= in a drop-in.")
        }
        return sentences.joined(separator: " ")
    }

    private static func rate(_ limit: RateLimit) -> String {
        let perSecond = limit.perSecond.rounded() == limit.perSecond ? String(Int(limit.perSecond)) : String(limit.perSecond)
        return "at most \(perSecond)/s with bursts of \(limit.burst)"
    }

    private static func pathMarker(_ url: String) -> String {
        RedactedURL(url).description.count < url.count ? "/…" : ""
    }

    private static func actions(_ subscription: SubscriptionConfig) -> String {
        var text = subscription.include.isEmpty ? "events" : subscription.include.joined(separator: ", ") + " events"
        if !subscription.exclude.isEmpty { text += " except " + subscription.exclude.joined(separator: ", ") }
        return subscription.include.isEmpty && subscription.exclude.isEmpty ? "events (all actions)" : text
    }
}
