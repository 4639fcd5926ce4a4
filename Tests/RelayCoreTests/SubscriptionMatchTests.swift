import RelayCore
import RelayJSON
import Testing

/// `match`'s verdicts decide exactly as the router does.
@Suite struct SubscriptionMatchTests {
    @Test func verdictsAgreeWithTheRouterOnEveryCombination() throws {
        let filters: [EventFilter?] = [
            nil,
            .condition(try #require(FieldPath("total")), .gte, .number(JSONNumber(500))),
            .any([.condition(try #require(FieldPath("tier")), .eq, .string("gold")), .not(.condition(try #require(FieldPath("total")), .exists, .bool(true)))]),
            .all([]), .any([]),
        ]
        let actionSets: [([String], [String])] = [([], []), (["buy"], []), ([], ["page"]), (["buy", "page"], ["refund"])]
        var events: [Event] = []
        for (index, action) in ["buy", "page", "refund", ""].enumerated() {
            for fields in [JSONObject(), JSONObject([("total", .number(JSONNumber(700)))]), JSONObject([("tier", .string("gold")), ("total", .number(JSONNumber(10)))])] {
                events.append(Event(id: "e\(index)", time: Timestamp(millisecondsSinceEpoch: 0), action: action, timeValue: .null, raw: Array(JSONValue.object(fields).description.utf8)))
            }
        }
        var checked = 0
        for filter in filters {
            for (include, exclude) in actionSets {
                let subscription = SubscriptionConfig(name: "s", source: "a", include: include, exclude: exclude, filter: filter, webhook: WebhookConfig(url: "https://e.com/"))
                let router = Router(subscriptions: [subscription])
                for event in events {
                    let verdict = subscription.verdict(for: event)
                    #expect(verdict.selected == router.route(event).contains("s"), "\(verdict.decidedBy)")
                    #expect(!verdict.decidedBy.isEmpty)
                    checked += 1
                }
            }
        }
        #expect(checked == 5 * 4 * 12)
    }
}
