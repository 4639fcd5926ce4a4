import Crypto
import CurlHTTP
import Foundation
import RelayJSON

/// Builds webhook requests exactly as docs/configuration.md says ("Requests the relay sends"): body, `webhook-id`, `webhook-timestamp`, `webhook-signature`
/// (Standard Webhooks v1), `user-agent`, content type, and the subscription's own headers.
public struct WebhookRequestBuilder: Sendable {
    private let subscription: SubscriptionConfig

    /// A builder for one subscription.
    public init(subscription: SubscriptionConfig) { self.subscription = subscription }

    /// The `webhook-id` of a request carrying these deliveries: `<subscription>:<eventID>` for one event; for a
    /// batch, `<subscription>:batch-<hash of the event ids>`, a pure function of its contents (invariant 4).
    ///
    /// The hash is SHA-256 of the ids joined by newlines, its first 12 bytes in lower-case hex, as every release has
    /// made it: the same events give the same id whichever release composes them (a backup restored after going
    /// back to an older release delivers events again "under their original webhook-ids", docs/operations.md, and
    /// receivers dedupe on them). Fed id by id and written digit by digit: the joined copy and `String(format:)`
    /// per byte were 2.5% of the relay's time in a batched drain.
    public static func webhookID(subscription: String, eventIDs: [String], batched: Bool) -> String {
        guard batched else { return "\(subscription):\(eventIDs[0])" }
        // The ids one per line, hashed at once: an update per id and separator cost four times the hashing.
        var lines: [UInt8] = []
        lines.reserveCapacity(eventIDs.count * 40)
        for (index, id) in eventIDs.enumerated() {
            if index > 0 { lines.append(UInt8(ascii: "\n")) }
            lines += id.utf8
        }
        let digits = Array("0123456789abcdef".utf8)
        var hex: [UInt8] = []
        hex.reserveCapacity(24)
        for byte in SHA256.hash(data: lines).prefix(12) {
            hex.append(digits[Int(byte >> 4)])
            hex.append(digits[Int(byte & 0x0f)])
        }
        return "\(subscription):batch-\(String(decoding: hex, as: UTF8.self))"
    }

    /// A short hash of where and how requests go (URL, headers, signing key): it tells whether a webhook changed
    /// without keeping any of those secrets.
    public static func fingerprint(of webhook: WebhookConfig) -> String {
        var text = webhook.url
        for (name, value) in webhook.headers { text += "\n\(name): \(value.exposedValue)" }
        if let key = webhook.signingKey { text += "\n" + key.exposedKey.map { String($0) }.joined(separator: ",") }
        return SHA256.hash(data: Array(text.utf8)).prefix(8).map { String(format: "%02x", $0) }.joined()
    }

    /// The request for `deliveries` attempted at `now`.
    public func request(for deliveries: [Delivery], now: Timestamp) -> HTTPRequest {
        let webhook = subscription.webhook
        // A stored batch goes as one even after `batchSize` went down to 1 (a strict subscription sends it whole).
        let batched = webhook.batchSize > 1 || deliveries.count > 1
        // A batch's id is the one stored at its first attempt, never recomputed (invariant 4).
        let id = batched
            ? deliveries[0].batchID ?? Self.webhookID(subscription: subscription.name, eventIDs: deliveries.map(\.eventID), batched: true)
            : Self.webhookID(subscription: subscription.name, eventIDs: deliveries.map(\.eventID), batched: false)
        var body: [UInt8] = []
        if batched { body.append(UInt8(ascii: "[")) }
        for (index, delivery) in deliveries.enumerated() {
            if index > 0 { body.append(UInt8(ascii: ",")) }
            let eventID = batched ? Self.webhookID(subscription: subscription.name, eventIDs: [delivery.eventID], batched: false) : id
            appendPayload(delivery, id: eventID, to: &body)
        }
        if batched { body.append(UInt8(ascii: "]")) }

        let timestamp = String(now.millisecondsSinceEpoch / 1000)
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "user-agent", value: "intilery-relay/\(RelayVersion.current)")
        headers.add(name: "webhook-id", value: id)
        headers.add(name: "webhook-timestamp", value: timestamp)
        if let key = webhook.signingKey {
            headers.add(name: "webhook-signature", value: Self.signature(id: id, timestamp: timestamp, body: body, key: key))
        }
        for header in webhook.headers { headers.add(name: header.name, value: header.value.exposedValue) }
        return HTTPRequest(
            method: "POST", url: webhook.url, headers: headers, body: body,
            connectTimeout: min(webhook.timeout, .seconds(10)), timeout: webhook.timeout,
            responseBodyLimit: .keepFirst(64 * 1024))
    }

    private func appendPayload(_ delivery: Delivery, id: String, to body: inout [UInt8]) {
        switch subscription.webhook.payload {
        case .event:
            body.append(contentsOf: delivery.payload)
        case .envelope:
            var head = #"{"id":"#
            JSONWriter.writeString(id, to: &head)
            head += #","type":"#
            JSONWriter.writeString(delivery.action, to: &head)
            head += #","timestamp":"# + delivery.timeValue + #","subscription":"#
            JSONWriter.writeString(subscription.name, to: &head)
            head += #","data":"#
            body.append(contentsOf: head.utf8)
            body.append(contentsOf: delivery.payload)
            body.append(UInt8(ascii: "}"))
        }
    }

    /// `v1,<base64 HMAC-SHA256(key, id.timestamp.body)>` (Standard Webhooks 1.0).
    public static func signature(id: String, timestamp: String, body: [UInt8], key: WebhookSigningKey) -> String {
        var message = Array("\(id).\(timestamp).".utf8)
        message.append(contentsOf: body)
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key.exposedKey))
        return "v1," + Data(mac).base64EncodedString()
    }
}
