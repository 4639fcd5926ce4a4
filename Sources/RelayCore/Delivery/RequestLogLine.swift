import CurlHTTP
import Logging

/// The `request done` line at trace level, one per webhook request, the same from either dispatcher.
enum RequestLogLine {
    static func metadata(
        _ deliveries: [Delivery], attempt: Int, took: Duration, outcome: DeliveryOutcome.Decision, status: Int?, transportError: CurlHTTPError?
    ) -> Logger.Metadata {
        var metadata: Logger.Metadata = [
            "events": .stringConvertible(deliveries.count), "first_event": "\(deliveries[0].eventID)",
            "attempt": .stringConvertible(attempt), "took_s": .stringConvertible(LogSeconds(took)), "outcome": "\(outcome.logName)",
        ]
        // The HTTP status as a number, or, when no answer came, what went wrong instead.
        if let status {
            metadata["status"] = .stringConvertible(status)
        } else if let transportError {
            metadata["error"] = "\(transportError.shortDescription)"
        }
        return metadata
    }
}
