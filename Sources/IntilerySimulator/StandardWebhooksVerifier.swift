import Crypto
import Foundation
import HTTPServer

/// Checks a request's `webhook-signature` as a Standard Webhooks 1.0 receiver does, written from the spec and
/// independent of the relay's signer, so that a bug in one is caught by the other.
public enum StandardWebhooksVerifier {
    /// How far `webhook-timestamp` may be from now, as the spec recommends.
    public static let tolerance: Int64 = 300

    /// The `v1,<base64>` signature of `id.timestamp.body` under `key`.
    public static func signature(id: String, timestamp: Int64, body: [UInt8], key: [UInt8]) -> String {
        var message = Array("\(id).\(timestamp).".utf8)
        message.append(contentsOf: body)
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key))
        return "v1," + Data(mac).base64EncodedString()
    }

    /// Whether any of the space-separated signatures matches and the timestamp is within tolerance.
    static func verify(request: HTTPServerRequest, key: [UInt8], nowSeconds: Int64) -> Bool {
        guard !key.isEmpty, let id = request.header("webhook-id"), let timestampText = request.header("webhook-timestamp"),
            let timestamp = Int64(timestampText), abs(nowSeconds - timestamp) <= tolerance,
            let signatures = request.header("webhook-signature")
        else { return false }
        let expected = signature(id: id, timestamp: timestamp, body: request.body, key: key)
        return signatures.split(separator: " ").contains { constantTimeEquals(String($0), expected) }
    }

    private static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        let a = Array(a.utf8), b = Array(b.utf8)
        guard a.count == b.count else { return false }
        return zip(a, b).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
