import CurlHTTP

/// What one request's result says, read the same way by the single-instance ``Dispatcher`` and the
/// ``ClaimDispatcher``: the status or the transport error, `Retry-After`, and the start of a failure's body.
struct WebhookAnswer {
    var status: Int?
    var transportError: CurlHTTPError?
    var retryAfter: Duration?
    /// The first KiB of a failure's body, kept with a dead letter; a 2xx body is never stored.
    var snippet: [UInt8] = []

    init(_ result: Result<HTTPResponse, CurlHTTPError>, now: Timestamp) {
        switch result {
        case .success(let response):
            status = response.status
            if !(200..<300).contains(response.status) { snippet = Array(response.body.prefix(1024)) }
            retryAfter = RetryAfter.parse(response.headers["retry-after"], now: now)
        case .failure(let error):
            transportError = error
        }
    }

    /// A 429, or a 503 with `Retry-After`: flow control, which never counts for the circuit breaker.
    var isFlowControl: Bool { status == 429 || (status == 503 && retryAfter != nil) }

    /// Trouble with the endpoint itself: no answer, a timeout, 408 or 5xx (a 503 without `Retry-After` included: a
    /// load balancer whose backend is down). Any other answer shows the endpoint is up.
    var endpointFailed: Bool { transportError?.isTransient == true || status.map { $0 >= 500 || $0 == 408 } == true }

    /// The failure as outcomes and dead letters name it (`http_503`, a transport error's short form); nil for 2xx.
    var errorText: String? { transportError.map(\.shortDescription) ?? status.flatMap { (200..<300).contains($0) ? nil : "http_\($0)" } }
}
