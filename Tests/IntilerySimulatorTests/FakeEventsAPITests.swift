import CurlHTTP
import Foundation
import IntilerySimulator
import RelayJSON
import Testing

@Suite struct FakeEventsAPITests {
    @Test func refusesWrongTokenOtherAccountsAndMissingContentType() async throws {
        try await withFakeAPI { api, client, _ in
            api.log.addBacklog(count: 3, from: testEpoch - 60_000, to: testEpoch)
            #expect(try await client.execute(api.request(token: "wrong")).status == 401)
            #expect(try await client.execute(api.request(path: "/track/other/acme/ACME/v1/events")).status == 404)
            #expect(try await client.execute(api.request(path: "/track/acme/acme/OTHER/v1/events/")).status == 404)
            #expect(try await client.execute(api.request(contentType: nil)).status == 400)
            #expect(try await client.execute(api.request(contentType: "text/plain")).status == 400)
            #expect(try await client.execute(api.request(contentType: "application/json; charset=utf-8")).status == 200)
            let trailingSlash = try await client.execute(api.request(path: "/track/acme/acme/ACME/v1/events/"))
            #expect(trailingSlash.status == 200)
        }
    }

    @Test func requestOverOneMegabyteIs413() async throws {
        try await withFakeAPI { api, client, _ in
            var request = api.request()
            request.body = [UInt8](repeating: 0x20, count: (1 << 20) + 1)
            let response = try await client.execute(request)
            #expect(response.status == 413)
        }
    }

    @Test func sizeAndTheTenThousandWindowAreEnforced() async throws {
        try await withFakeAPI { api, client, _ in
            for query in ["size=0", "size=101", "size=x", "from=-1", "from=9901&size=100", "from=10000&size=1", "sort=up", "start=yesterday"] {
                let response = try await client.execute(api.request(query))
                #expect(response.status == 400, "\(query)")
                #expect(String(decoding: response.body, as: UTF8.self).contains("error"), "\(query)")
            }
            for query in ["size=1", "size=100", "from=9900&size=100"] {
                #expect(try await client.execute(api.request(query)).status == 200, "\(query)")
            }
        }
    }

    @Test func defaultSortIsDescendingAndAscIsAscending() async throws {
        try await withFakeAPI { api, client, _ in
            api.log.addBacklog(count: 30, from: testEpoch - 30_000, to: testEpoch)
            let desc = try idsOfPage(try await client.execute(api.request("size=100")))
            let asc = try idsOfPage(try await client.execute(api.request("size=100&sort=asc")))
            #expect(asc.count == 30)
            #expect(desc == asc.reversed())
            #expect(asc.first == "evt-0")
            let defaultSize = try idsOfPage(try await client.execute(api.request()))
            #expect(defaultSize.count == 10)
        }
    }

    @Test func includeExcludeStartAndEndFilter() async throws {
        try await withFakeAPI { api, client, _ in
            api.log.addBacklog(count: 600, from: testEpoch - 600_000, to: testEpoch)
            let all = api.log.allEvents
            func ids(_ query: String) async throws -> Set<String> {
                Set(try idsOfPage(try await client.execute(api.request("size=100&sort=asc&" + query))))
            }
            let clicks = try await ids("include=email_click&end=2024-05-01")
            #expect(!clicks.isEmpty)
            #expect(clicks == Set(all.filter { $0.action == "email_click" }.prefix(100).map(\.eventID)))
            let excluded = try await ids("exclude=page,identify,email_click,email_open")
            #expect(excluded == Set(all.filter { ["purchase", "logged_in"].contains($0.action) }.prefix(100).map(\.eventID)))
            // 2024-04-30T23:55:00Z, written three ways.
            let cut = testEpoch - 300_000
            let expected = Set(all.filter { $0.timestamp >= cut }.prefix(100).map(\.eventID))
            #expect(try await ids("start=2024-04-30T23:55:00Z") == expected)
            #expect(try await ids("start=2024-04-30T23:55:00.000Z") == expected)
            #expect(try await ids("start=2024-05-01T01:55:00%2B02:00") == expected)
            let window = try await ids("start=2024-04-30T23:55:00Z&end=2024-04-30T23:56:00.5Z")
            #expect(window == Set(all.filter { $0.timestamp >= cut && $0.timestamp < cut + 60_500 }.map(\.eventID)))
        }
    }

    @Test func sameMillisecondEventsPageInAStableOrder() async throws {
        try await withFakeAPI { api, client, _ in
            api.log.addBurst(count: 250, at: testEpoch - 1000)
            var seen: [String] = []
            for from in stride(from: 0, to: 300, by: 100) {
                seen += try idsOfPage(try await client.execute(api.request("sort=asc&size=100&from=\(from)")))
            }
            #expect(seen.count == 250)
            #expect(Set(seen).count == 250)
            #expect(seen == (0..<250).map { "evt-\($0)" })
            let again = try idsOfPage(try await client.execute(api.request("sort=asc&size=100&from=100")))
            #expect(again == Array(seen[100..<200]))
        }
    }

    @Test func rateLimitAllowsTheBurstThenAnswers429() async throws {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = (100, 500)
        try await withFakeAPI(settings: settings) { api, client, time in
            var statuses: [Int: Int] = [:]
            for _ in 0..<510 { statuses[try await client.execute(api.request("size=1")).status, default: 0] += 1 }
            #expect(statuses == [200: 500, 429: 10])
            let limited = try await client.execute(api.request("size=1"))
            #expect(limited.status == 429)
            #expect(limited.headers["retry-after"] == "1")
            time.advance(by: .seconds(1))
            var allowed = 0
            for _ in 0..<150 where try await client.execute(api.request("size=1")).status == 200 { allowed += 1 }
            #expect(allowed == 100)
            api.update { $0.retryAfterSeconds = nil }
            #expect(try await client.execute(api.request("size=1")).headers["retry-after"] == nil)
            #expect(api.counts.rateLimited == 62)
        }
    }

    @Test(arguments: ResponseShape.allCases)
    func everyResponseShapeCarriesTheEvents(_ shape: ResponseShape) async throws {
        var settings = FakeEventsAPI.Settings()
        settings.shape = shape
        try await withFakeAPI(settings: settings) { api, client, _ in
            api.log.addBacklog(count: 5, from: testEpoch - 5000, to: testEpoch)
            let events = try eventsOfPage(try await client.execute(api.request("sort=asc")).body)
            #expect(events.count == 5)
            let first = try #require(events.first)
            switch shape {
            case .elasticsearch:
                #expect(first["_id"] == .string("evt-0"))
                #expect(first["_source"]?.objectValue?["eventID"] == nil)
            case .custom:
                #expect(first["meta"]?.objectValue?["ref"] == .string("evt-0"))
                #expect(first["kind"] != nil && first["occurred"] != nil)
            default:
                #expect(first["eventID"] == .string("evt-0"))
            }
        }
    }

    @Test(arguments: FieldNaming.allCases)
    func everyFieldNamingCarriesIDTimeAndAction(_ naming: FieldNaming) async throws {
        var settings = FakeEventsAPI.Settings()
        settings.naming = naming
        try await withFakeAPI(settings: settings) { api, client, _ in
            let event = api.log.add(at: testEpoch - 1234, actionIndex: 2)
            let object = try #require(try eventsOfPage(try await client.execute(api.request()).body).first)
            let (idKey, timeKey, actionKey): (String, String, String) = switch naming {
            case .canonical: ("eventID", "timestamp", "action")
            case .camel: ("eventId", "date", "event")
            case .snake: ("event_id", "receivedAt", "type")
            case .segment: ("messageId", "createdAt", "event")
            }
            #expect(object[idKey] == .string(event.eventID))
            #expect(object[actionKey] == .string("email_click"))
            switch object[timeKey] {
            case .number(let number): #expect(number.integer.map(Int64.init) == testEpoch - 1234)
            case .string(let text): #expect(text.hasPrefix("2024-04-30T23:59:58"))
            default: Issue.record("no time in \(object)")
            }
            #expect(object["properties"]?.objectValue?["items"]?.arrayValue?.first?.objectValue?["sku"] == .string(event.sku))
        }
    }

    @Test func liveEventsAppearAsTimePassesAndLateOnesLater() async throws {
        try await withFakeAPI { api, client, time in
            api.log.startLiveTraffic(perSecond: 50, late: EventLog.LateVisibility(fraction: 0.2, delay: .seconds(10)))
            #expect(api.log.count == 0)
            time.advance(by: .seconds(2))
            #expect(api.log.count == 100)
            let late = api.log.allEvents.filter { $0.visibleAt > $0.timestamp }
            #expect(late.count > 5 && late.count < 40)
            let visible = try idsOfPage(try await client.execute(api.request("size=100&sort=asc")))
            #expect(visible.count == 100 - late.count)
            #expect(Set(visible).isDisjoint(with: late.map(\.eventID)))
            time.advance(by: .seconds(10))
            api.log.stopLiveTraffic()
            let events = api.log.allEvents.filter { $0.timestamp < testEpoch + 2000 }
            let now = Set(try idsOfPage(try await client.execute(api.request("size=100&sort=asc&end=2024-05-01T00:00:02Z"))))
            #expect(now == Set(events.map(\.eventID)))
        }
    }

    @Test func faultsAreServedAsConfigured() async throws {
        try await withFakeAPI(time: .system()) { api, client, _ in
            api.log.addBacklog(count: 100, from: testEpoch - 100_000, to: testEpoch)
            api.update { $0.faults = try! SimulatorFaults(parsing: "error=1") }
            #expect(try await client.execute(api.request()).status == 500)
            api.update { $0.faults = try! SimulatorFaults(parsing: "unavailable=1") }
            #expect(try await client.execute(api.request()).status == 503)
            api.update { $0.faults = try! SimulatorFaults(parsing: "malformed=1") }
            let malformed = try await client.execute(api.request("size=100"))
            #expect(malformed.status == 200)
            #expect(throws: JSONSyntaxError.self) { _ = try JSONParser.parse(malformed.body) }
            api.update { $0.faults = try! SimulatorFaults(parsing: "truncated=1") }
            await #expect(throws: CurlHTTPError.self) { _ = try await client.execute(api.request("size=100")) }
            api.update { $0.faults = try! SimulatorFaults(parsing: "latency=150ms") }
            let slow = try await client.execute(api.request())
            #expect(slow.status == 200)
            #expect(slow.timings.firstByte >= .milliseconds(150))
            api.update { $0.faults = SimulatorFaults() }
            #expect(try await client.execute(api.request()).status == 200)
        }
    }

    @Test func faultSpecsAreParsedAndBadOnesNamed() throws {
        let faults = try SimulatorFaults(parsing: "error=0.1,unavailable=0.05,malformed=0.01,truncated=0.02,latency=50ms")
        #expect(faults.internalError == 0.1 && faults.unavailable == 0.05 && faults.malformed == 0.01)
        #expect(faults.truncated == 0.02 && faults.latency == .milliseconds(50))
        #expect(throws: SimulatorSpecError.self) { _ = try SimulatorFaults(parsing: "error=2") }
        #expect(throws: SimulatorSpecError.self) { _ = try SimulatorFaults(parsing: "explode=0.1") }
    }

    @Test func mixedFaultRatesServeEachKind() async throws {
        var settings = FakeEventsAPI.Settings()
        settings.rateLimit = nil
        settings.faults = try SimulatorFaults(parsing: "error=0.2,unavailable=0.2")
        try await withFakeAPI(settings: settings) { api, client, _ in
            for _ in 0..<200 { _ = try await client.execute(api.request()) }
            let byStatus = api.counts.byStatus
            #expect((byStatus[500] ?? 0) > 20 && (byStatus[503] ?? 0) > 20 && (byStatus[200] ?? 0) > 80)
        }
    }
}
