import CCurl
import Synchronization

/// One request's easy handle, its buffers and the completion waiting for it.
///
/// `@unchecked Sendable`: the handle and the response buffers are touched by the calling task only while the
/// transfer is being set up, then only by the driver thread (curl callbacks and completion) until it finishes;
/// the completion handshake, the one part both sides touch, is behind `state`'s lock.
final class CurlTransfer: @unchecked Sendable {
    let easy: UnsafeMutableRawPointer
    let request: HTTPRequest
    private var headerList: UnsafeMutablePointer<curl_slist>?
    /// curl writes its failure text here; allocated so that its address is stable for the transfer's life.
    private let errorBuffer: UnsafeMutablePointer<CChar>

    private var body: [UInt8] = []
    private var headers = HTTPHeaders()
    private var bodyTruncated = false
    private var bodyOverLimit = false

    private enum State {
        case created
        /// Started: the driver thread calls the completion (an awaiting task's is a continuation's resume).
        case calling(@Sendable (Result<HTTPResponse, CurlHTTPError>) -> Void)
        case cancelledBeforeWaiting
        case finished
    }
    private let state = Mutex<State>(.created)

    private let pool: CurlEasyPool

    init(_ request: HTTPRequest, userAgent: String?, pool: CurlEasyPool) throws(CurlHTTPError) {
        guard request.url.hasCaseInsensitivePrefix("http://") || request.url.hasCaseInsensitivePrefix("https://") else {
            throw .protocolNotAllowed(request.url)
        }
        for field in request.headers.fields where Self.hasLineBreak(field.name) || Self.hasLineBreak(field.value) {
            throw .invalidRequest(url: request.url, detail: "header \(field.name) contains a line break")
        }
        guard let easy = pool.take() else { throw .other(url: request.url, detail: "curl_easy_init failed") }
        self.easy = easy
        self.pool = pool
        self.request = request
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        try configure(userAgent: userAgent)
    }

    deinit {
        pool.give(easy)
        curl_slist_free_all(headerList)
        errorBuffer.deallocate()
    }

    /// Whether `text` holds what `Character.isNewline` calls a line break, by scalar rather than by grapheme.
    private static func hasLineBreak(_ text: String) -> Bool {
        text.unicodeScalars.contains { (0x0A...0x0D).contains($0.value) || $0.value == 0x85 || $0.value == 0x2028 || $0.value == 0x2029 }
    }

    private func configure(userAgent: String?) throws(CurlHTTPError) {
        let url = request.url
        func check(_ code: CURLcode) throws(CurlHTTPError) {
            guard code == CURLE_OK else {
                throw code == CURLE_UNSUPPORTED_PROTOCOL
                    ? .protocolNotAllowed(url) : .other(url: url, detail: String(cString: curl_easy_strerror(code)))
            }
        }
        try check(ccurl_easy_setopt_string(easy, CURLOPT_PROTOCOLS_STR, "http,https"))
        try check(ccurl_easy_setopt_string(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"))
        try check(ccurl_easy_setopt_long(easy, CURLOPT_FOLLOWLOCATION, 0))
        try check(ccurl_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1))
        try check(ccurl_easy_setopt_long(easy, CURLOPT_TCP_KEEPALIVE, 1))
        try check(ccurl_easy_setopt_long(easy, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_2TLS)))
        try check(ccurl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYPEER, 1))
        try check(ccurl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYHOST, 2))
        try check(ccurl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, request.connectTimeout.milliseconds))
        try check(ccurl_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, request.timeout.milliseconds))
        if case .failBeyond(let limit) = request.responseBodyLimit {
            // Refuses early when Content-Length already says too much; the write callback catches the rest.
            try check(ccurl_easy_setopt_off_t(easy, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(limit)))
        }
        let code = url.withCString { ccurl_easy_setopt_string(easy, CURLOPT_URL, $0) }
        guard code == CURLE_OK else {
            throw code == CURLE_UNSUPPORTED_PROTOCOL ? .protocolNotAllowed(url) : .invalidURL(url)
        }
        if let userAgent { try check(userAgent.withCString { ccurl_easy_setopt_string(easy, CURLOPT_USERAGENT, $0) }) }

        switch request.method {
        case "GET": try check(ccurl_easy_setopt_long(easy, CURLOPT_HTTPGET, 1))
        case "HEAD": try check(ccurl_easy_setopt_long(easy, CURLOPT_NOBODY, 1))
        default: try check(ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, request.method))
        }
        if let body = request.body {
            try check(ccurl_easy_setopt_off_t(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count)))
            try check(body.withUnsafeBytes { ccurl_easy_setopt_pointer(easy, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!)) })
            if request.method != "POST" {
                try check(ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, request.method))
            }
        }

        // "Expect:" stops curl from waiting for a 100-continue on larger bodies, a round trip receivers never need.
        var list = curl_slist_append(nil, "Expect:")
        for field in request.headers.fields { list = Self.append(field.name, field.value, to: list) }
        headerList = list
        try check(ccurl_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, list))

        try check(ccurl_easy_setopt_pointer(easy, CURLOPT_ERRORBUFFER, errorBuffer))
        let me = Unmanaged.passUnretained(self).toOpaque()
        try check(ccurl_easy_setopt_pointer(easy, CURLOPT_WRITEDATA, me))
        try check(ccurl_easy_setopt_callback(easy, CURLOPT_WRITEFUNCTION, curlWriteBody))
        try check(ccurl_easy_setopt_pointer(easy, CURLOPT_HEADERDATA, me))
        try check(ccurl_easy_setopt_callback(easy, CURLOPT_HEADERFUNCTION, curlWriteHeader))
    }

    /// Appends the header line `name: value` to `list` (curl copies it), written into a stack buffer: a Swift string
    /// built per line, then passed as a C string, cost two allocations per header of every request.
    private static func append(
        _ name: String, _ value: String, to list: UnsafeMutablePointer<curl_slist>?
    ) -> UnsafeMutablePointer<curl_slist>? {
        // "Name;" is curl's way to send a header with an empty value.
        let separator: StaticString = value.isEmpty ? ";" : ": "
        let separatorBytes = UnsafeBufferPointer(start: separator.utf8Start, count: separator.utf8CodeUnitCount)
        let count = name.utf8.count + separatorBytes.count + value.utf8.count + 1
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: count) { line in
            var end = line.initialize(fromContentsOf: name.utf8)
            end = line[end...].initialize(fromContentsOf: separatorBytes)
            end = line[end...].initialize(fromContentsOf: value.utf8)
            line.initializeElement(at: end, to: 0)
            return line.withMemoryRebound(to: CChar.self) { curl_slist_append(list, $0.baseAddress) }
        }
    }

    // MARK: - Driver thread

    /// Takes a body chunk; returning less than its size makes curl abort with CURLE_WRITE_ERROR.
    func receiveBody(_ chunk: UnsafeRawBufferPointer) -> Int {
        let room = request.responseBodyLimit.bytes - body.count
        if chunk.count <= room {
            body.append(contentsOf: chunk)
            return chunk.count
        }
        switch request.responseBodyLimit {
        case .failBeyond:
            bodyOverLimit = true
        case .keepFirst:
            body.append(contentsOf: chunk.prefix(max(room, 0)))
            bodyTruncated = true
        }
        return 0
    }

    func receiveHeaderLine(_ line: UnsafeRawBufferPointer) {
        // Bytes, not a String per line: every response passes through here, once per header.
        let bytes = line.bindMemory(to: UInt8.self)
        if bytes.starts(with: "HTTP/".utf8) {
            // A new status line: an interim 1xx response came before, so its headers are not the final ones.
            headers = HTTPHeaders()
            return
        }
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { return }
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0D || byte == 0x0A }
        var start = colon + 1
        var end = bytes.count
        while start < end, isSpace(bytes[start]) { start += 1 }
        while end > start, isSpace(bytes[end - 1]) { end -= 1 }
        headers.add(
            name: String(decoding: UnsafeBufferPointer(rebasing: bytes[..<colon]), as: UTF8.self),
            value: String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self))
    }

    /// Builds the outcome from curl's result code once the transfer is done.
    func outcome(for code: CURLcode) -> Result<HTTPResponse, CurlHTTPError> {
        let url = request.url
        let detail = String(cString: errorBuffer)
        switch code {
        case CURLE_OK:
            break
        case CURLE_WRITE_ERROR where bodyTruncated:
            break
        case CURLE_WRITE_ERROR where bodyOverLimit, CURLE_FILESIZE_EXCEEDED:
            return .failure(.bodyTooLarge(url: url, limit: request.responseBodyLimit.bytes))
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            return .failure(.dnsFailure(url: url, detail: detail))
        case CURLE_COULDNT_CONNECT:
            return .failure(.connectionRefused(url: url, detail: detail))
        case CURLE_OPERATION_TIMEDOUT:
            return .failure(.timeout(url: url, detail: detail))
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
            CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR, CURLE_SSL_PINNEDPUBKEYNOTMATCH,
            CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_CRL_BADFILE, CURLE_SSL_SHUTDOWN_FAILED, CURLE_SSL_ENGINE_NOTFOUND,
            CURLE_SSL_ENGINE_SETFAILED, CURLE_SSL_ENGINE_INITFAILED, CURLE_USE_SSL_FAILED:
            return .failure(.tls(url: url, detail: detail))
        case CURLE_UNSUPPORTED_PROTOCOL:
            return .failure(.protocolNotAllowed(url))
        case CURLE_URL_MALFORMAT:
            return .failure(.invalidURL(url))
        case CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE, CURLE_HTTP2,
            CURLE_HTTP2_STREAM, CURLE_WEIRD_SERVER_REPLY, CURLE_BAD_CONTENT_ENCODING:
            return .failure(.connectionFailed(url: url, detail: detail))
        default:
            let text = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
            return .failure(.other(url: url, detail: text))
        }
        var status = 0
        _ = ccurl_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
        var newConnections = 0
        _ = ccurl_easy_getinfo_long(easy, CURLINFO_NUM_CONNECTS, &newConnections)
        var version = 0
        _ = ccurl_easy_getinfo_long(easy, CURLINFO_HTTP_VERSION, &version)
        let response = HTTPResponse(
            status: status,
            headers: headers,
            body: body,
            bodyTruncated: bodyTruncated,
            timings: HTTPTimings(
                nameLookup: microseconds(CURLINFO_NAMELOOKUP_TIME_T),
                connect: microseconds(CURLINFO_CONNECT_TIME_T),
                tlsHandshake: microseconds(CURLINFO_APPCONNECT_TIME_T),
                firstByte: microseconds(CURLINFO_STARTTRANSFER_TIME_T),
                total: microseconds(CURLINFO_TOTAL_TIME_T)
            ),
            openedNewConnection: newConnections > 0,
            httpVersion: Self.versionName(version)
        )
        return .success(response)
    }

    private func microseconds(_ info: CURLINFO) -> Duration {
        var value: curl_off_t = 0
        _ = ccurl_easy_getinfo_off_t(easy, info, &value)
        return .microseconds(value)
    }

    private static func versionName(_ version: Int) -> String {
        switch version {
        case Int(CURL_HTTP_VERSION_1_0): return "1.0"
        case Int(CURL_HTTP_VERSION_1_1): return "1.1"
        case Int(CURL_HTTP_VERSION_2_0): return "2"
        case Int(CURL_HTTP_VERSION_3): return "3"
        default: return "unknown"
        }
    }

    // MARK: - Completion handshake

    /// Stores the completion; false when a cancel came first, in which case it has been called already.
    func call(_ completion: @escaping @Sendable (Result<HTTPResponse, CurlHTTPError>) -> Void) -> Bool {
        let cancelledFirst = state.withLock { state -> Bool in
            if case .cancelledBeforeWaiting = state {
                state = .finished
                return true
            }
            state = .calling(completion)
            return false
        }
        if cancelledFirst { completion(.failure(.cancelled(url: request.url))) }
        return !cancelledFirst
    }

    /// Records a cancel; true when the transfer may be in the driver's hands and must be pulled out there.
    func markCancelled() -> Bool {
        state.withLock { state -> Bool in
            switch state {
            case .created:
                state = .cancelledBeforeWaiting
                return false
            case .calling:
                return true
            case .cancelledBeforeWaiting, .finished:
                return false
            }
        }
    }

    /// Whether the completion has been called (or never will be).
    var isFinished: Bool {
        state.withLock { state in
            if case .finished = state { return true }
            return false
        }
    }

    /// Calls the completion once; later calls do nothing.
    func finish(_ result: Result<HTTPResponse, CurlHTTPError>) {
        let completion = state.withLock { state -> (@Sendable (Result<HTTPResponse, CurlHTTPError>) -> Void)? in
            guard case .calling(let completion) = state else { return nil }
            state = .finished
            return completion
        }
        completion?(result)
    }
}

private func curlWriteBody(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ userdata: UnsafeMutableRawPointer?) -> Int {
    guard let userdata else { return 0 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userdata).takeUnretainedValue()
    return transfer.receiveBody(UnsafeRawBufferPointer(start: data, count: size * count))
}

private func curlWriteHeader(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ userdata: UnsafeMutableRawPointer?) -> Int {
    guard let userdata else { return 0 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userdata).takeUnretainedValue()
    transfer.receiveHeaderLine(UnsafeRawBufferPointer(start: data, count: size * count))
    return size * count
}

extension Duration {
    /// Whole milliseconds, rounded up so that a positive timeout never becomes curl's "no timeout" zero.
    var milliseconds: Int {
        let (seconds, attoseconds) = components
        let ms = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int(ms)
    }
}

