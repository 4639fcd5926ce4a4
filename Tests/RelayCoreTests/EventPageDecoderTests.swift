import RelayCore
import RelayJSON
import Testing

@Suite struct EventPageDecoderTests {
    let decoder = EventPageDecoder()

    @Test func keepsEachEventsBytesExactly() throws {
        let body = #"[ {"eventID":"a","timestamp":"2024-05-01T00:00:00.000Z","action":"x","n": 1.50, "s":"caf\u00e9"} ,{"id":7,"date":1714521600001,"type":"y"}]"#
        let page = try decoder.decode(Array(body.utf8))
        #expect(page.events.map(\.id) == ["a", "7"])
        #expect(String(decoding: page.events[0].raw, as: UTF8.self) == #"{"eventID":"a","timestamp":"2024-05-01T00:00:00.000Z","action":"x","n": 1.50, "s":"caf\u00e9"}"#)
        #expect(page.events[1].time.millisecondsSinceEpoch == 1_714_521_600_001)
        #expect(page.events.map(\.action) == ["x", "y"])
        #expect(page.elementCount == 2)
    }

    @Test func fieldFallbacksTakeTheFirstPresentNonNull() throws {
        let body = #"[{"eventID": null, "eventId": "", "event_id": "third", "timestamp": null, "receivedAt": "2024-05-01T02:00:00+02:00", "action": null, "event": "e", "type": "t"}]"#
        let event = try #require(try decoder.decode(Array(body.utf8)).events.first)
        #expect(event.id == "third")
        #expect(event.time.iso8601 == "2024-05-01T00:00:00.000Z")
        #expect(event.action == "e")
    }

    @Test func elasticsearchShapeUsesSourceAndFallsBackToUnderscoreID() throws {
        let body = #"{"took": 2, "hits": {"total": {"value": 2}, "hits": [{"_id": "es-1", "_source": {"timestamp": "2024-05-01T00:00:00Z", "action": "a"}}, {"_id": "es-2", "_source": {"messageId": "m-2", "createdAt": "2024-05-01T00:00:01.5Z"}}]}}"#
        let page = try decoder.decode(Array(body.utf8))
        #expect(page.events.map(\.id) == ["es-1", "m-2"])
        #expect(String(decoding: page.events[0].raw, as: UTF8.self) == #"{"timestamp": "2024-05-01T00:00:00Z", "action": "a"}"#)
    }

    @Test(arguments: ["events", "data", "results", "items"])
    func objectContainersAreFound(_ key: String) throws {
        let body = #"{"meta": {"events": 3}, "\#(key)": [{"id": "1", "timestamp": 0}], "next": null}"#
        #expect(try decoder.decode(Array(body.utf8)).events.map(\.id) == ["1"])
    }

    @Test func eventsWithoutIDOrTimeAreSkippedAndCounted() throws {
        let body = #"[{"id": "ok", "timestamp": 5}, {"timestamp": 5}, {"id": "no-time"}, {"id": "bad", "timestamp": "yesterday"}, 42, {"id": "n", "timestamp": null, "date": null}]"#
        let page = try decoder.decode(Array(body.utf8))
        #expect(page.events.map(\.id) == ["ok"])
        #expect(page.elementCount == 6)
        #expect(page.skipped == [.missingID: 1, .missingTime: 2, .unreadableTime: 1, .notAnObject: 1])
    }

    @Test(arguments: [
        #"[{"id": "1", "timestamp": 0}"#, #"{"events": [{"id": "1", "timestamp": 0}]"#, "<html>", "", #"{"nothing": []}"#,
        #"{"events": {"id": 1}}"#, #"[{"id": "1", "timestamp": 0}] trailing"#, "null",
    ])
    func unreadableBodiesFailTheWholePage(_ body: String) {
        #expect(throws: EventPageDecoder.DecodingError.self) { _ = try decoder.decode(Array(body.utf8)) }
    }

    @Test func overridesPointAtTheArrayAndFields() throws {
        let decoder = EventPageDecoder(
            overrides: ResponseShapeOverrides(eventsPath: "/result/0/rows", idField: "meta.ref", timestampField: "at", actionField: "what.kind"))
        let body = #"{"result": [{"rows": [{"meta": {"ref": "r1"}, "at": 1000, "what": {"kind": "k"}, "id": "ignored"}]}]}"#
        let event = try #require(try decoder.decode(Array(body.utf8)).events.first)
        #expect(event.id == "r1")
        #expect(event.action == "k")
        #expect(event.time.millisecondsSinceEpoch == 1000)
        #expect(throws: EventPageDecoder.DecodingError.self) { _ = try decoder.decode(Array(#"{"result": []}"#.utf8)) }
    }
}
