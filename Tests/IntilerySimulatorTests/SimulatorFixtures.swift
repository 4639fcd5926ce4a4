import CurlHTTP
import IntilerySimulator
import RelayJSON
import Testing

/// 2024-05-01T00:00:00Z, the manual clock's start in these tests.
let testEpoch: Int64 = 1_714_521_600_000

/// Runs `body` with a fake API on a manual clock and an HTTP client, and stops both.
func withFakeAPI<T>(
    settings: FakeEventsAPI.Settings = .init(), time: SimulatorTime = .manual(at: testEpoch),
    _ body: (FakeEventsAPI, CurlHTTPClient, SimulatorTime) async throws -> T
) async throws -> T {
    let api = try await FakeEventsAPI.start(settings: settings, time: time)
    let client = CurlHTTPClient()
    do {
        let result = try await body(api, client, time)
        await client.shutdown()
        try await api.shutdown()
        return result
    } catch {
        await client.shutdown()
        try await api.shutdown()
        throw error
    }
}

extension FakeEventsAPI {
    /// A request for `query` with the right token and content type unless told otherwise.
    func request(_ query: String = "", token: String? = nil, contentType: String? = "application/json", path: String? = nil)
        -> HTTPRequest
    {
        var headers = HTTPHeaders()
        if let contentType { headers.add(name: "content-type", value: contentType) }
        headers.add(name: "auth-token", value: token ?? account.authToken)
        let url = (path.map { baseURL + $0 } ?? eventsURL) + (query.isEmpty ? "" : "?" + query)
        return HTTPRequest(url: url, headers: headers)
    }
}

/// The events of a page in any accepted shape: (id, timestamp text, action).
func eventsOfPage(_ body: [UInt8]) throws -> [JSONObject] {
    let value = try JSONParser.parse(body)
    if let array = value.arrayValue { return array.compactMap(\.objectValue) }
    let object = try #require(value.objectValue)
    for key in ["events", "data", "results", "items"] {
        if let array = object[key]?.arrayValue { return array.compactMap(\.objectValue) }
    }
    if let hits = object["hits"]?.objectValue?["hits"]?.arrayValue {
        return hits.compactMap(\.objectValue)
    }
    if let list = object["payload"]?.objectValue?["list"]?.arrayValue { return list.compactMap(\.objectValue) }
    Issue.record("no events array in \(value)")
    return []
}

/// The ids of a page's events, for the canonical shape.
func idsOfPage(_ response: HTTPResponse) throws -> [String] {
    try eventsOfPage(response.body).compactMap { $0["eventID"]?.stringValue }
}
