import RelayCore
import RelayJSON
import Testing

@Suite struct EventFilterTests {
    static let event = try! JSONParser.parse(#"""
        {"action": "purchase", "userId": null, "properties": {"total": 12.5, "count": 3, "campaign": "spring-sale",
         "tags": ["a", "b", 1], "items": [{"sku": "AB-1"}, {"sku": "CD-2"}], "vip": true, "zero": 0, "name": "Émile"}}
        """#)

    static func leaf(_ path: String, _ op: FilterOperator, _ value: JSONValue) -> EventFilter {
        .condition(FieldPath(path)!, op, value)
    }

    static func number(_ text: String) -> JSONValue { .number(JSONNumber(text: text)) }

    @Test(arguments: [
        (leaf("properties.total", .eq, number("12.50")), true),
        (leaf("properties.count", .eq, number("3.0")), true),
        (leaf("properties.count", .eq, .string("3")), false),
        (leaf("properties.vip", .eq, number("1")), false),
        (leaf("properties.zero", .eq, .bool(false)), false),
        (leaf("properties.total", .ne, number("12")), true),
        (leaf("properties.missing", .ne, number("12")), false),
        (leaf("userId", .ne, .string("x")), false),
        (leaf("userId", .exists, .bool(false)), true),
        (leaf("properties.missing", .exists, .bool(false)), true),
        (leaf("properties.total", .exists, .bool(true)), true),
        (leaf("action", .in, .array([.string("page"), .string("purchase")])), true),
        (leaf("action", .nin, .array([.string("page"), .string("purchase")])), false),
        (leaf("properties.missing", .nin, .array([.string("x")])), false),
        (leaf("properties.total", .gt, number("12")), true),
        (leaf("properties.total", .gte, number("12.5")), true),
        (leaf("properties.total", .lt, number("12.5")), false),
        (leaf("properties.total", .lte, number("1e2")), true),
        (leaf("properties.total", .gt, .string("1")), false),
        (leaf("properties.campaign", .gt, .string("spring")), true),
        (leaf("properties.campaign", .lt, .string("summer")), true),
        (leaf("properties.name", .gt, .string("Z")), true),
        (leaf("properties.campaign", .contains, .string("-sa")), true),
        (leaf("properties.tags", .contains, .string("b")), true),
        (leaf("properties.tags", .contains, number("1.0")), true),
        (leaf("properties.tags", .contains, .string("c")), false),
        (leaf("properties.campaign", .prefix, .string("spring")), true),
        (leaf("properties.total", .prefix, .string("12")), false),
        (leaf("properties.items.1.sku", .eq, .string("CD-2")), true),
        (leaf("properties.items.2.sku", .exists, .bool(false)), true),
        (leaf("properties.items.x", .exists, .bool(false)), true),
    ])
    func leavesFollowTheSpec(_ filter: EventFilter, _ expected: Bool) {
        #expect(filter.matches(Self.event) == expected)
    }

    @Test func combinatorsAndNot() {
        let spring = Self.leaf("properties.campaign", .prefix, .string("spring"))
        let small = Self.leaf("properties.total", .lt, Self.number("10"))
        #expect(EventFilter.all([spring, .not(small)]).matches(Self.event))
        #expect(!EventFilter.all([spring, small]).matches(Self.event))
        #expect(EventFilter.any([small, spring]).matches(Self.event))
        #expect(EventFilter.all([]).matches(Self.event))
        #expect(!EventFilter.any([]).matches(Self.event))
        // `not` inverts whatever its inner filter gives, absent fields included.
        #expect(EventFilter.not(Self.leaf("properties.missing", .eq, .string("x"))).matches(Self.event))
    }
}

@Suite struct RouterTests {
    static func subscription(_ name: String, include: [String] = [], exclude: [String] = []) -> SubscriptionConfig {
        SubscriptionConfig(name: name, source: "s", include: include, exclude: exclude, webhook: WebhookConfig(url: "http://x/"))
    }

    @Test func serverSideFilterFollowsTheSpec() {
        let s = Self.subscription
        #expect(Router.serverSideFilter(for: [s("a", ["click"], []), s("b", ["click"], [])]) == ("click", []))
        #expect(Router.serverSideFilter(for: [s("a", ["click"], []), s("b", ["open"], [])]).include == nil)
        #expect(Router.serverSideFilter(for: [s("a", ["click", "open"], [])]).include == nil)
        #expect(Router.serverSideFilter(for: [s("a", [], ["page", "identify"])]).exclude == ["identify", "page"])
        #expect(Router.serverSideFilter(for: [s("a", [], ["page", "identify"]), s("b", [], ["page"])]).exclude == ["page"])
        #expect(Router.serverSideFilter(for: [s("a", [], ["page"]), s("b", ["page"], [])]).exclude == [])
        #expect(Router.serverSideFilter(for: [s("a", [], ["page"]), s("b", [], [])]).exclude == [])
        #expect(Router.serverSideFilter(for: [s("a", [], [])]) == (nil, []))
    }

    @Test func routesByIncludeExcludeAndWhere() throws {
        var vip = Self.subscription("vip")
        vip.filter = .condition(FieldPath("properties.vip")!, .eq, .bool(true))
        let router = Router(subscriptions: [
            Self.subscription("all"), Self.subscription("clicks", include: ["email_click"]),
            Self.subscription("no-clicks", exclude: ["email_click"]), vip,
        ])
        let event = Event(
            id: "1", time: Timestamp(millisecondsSinceEpoch: 0), action: "email_click", timeValue: .null,
            raw: Array(#"{"properties": {"vip": true}}"#.utf8))
        #expect(router.route(event) == ["all", "clicks", "vip"])
        var other = event
        other.action = "page"
        other.raw = Array("{}".utf8)
        #expect(router.route(other) == ["all", "no-clicks"])
    }
}

func == (lhs: (include: String?, exclude: [String]), rhs: (String?, [String])) -> Bool {
    lhs.include == rhs.0 && lhs.exclude == rhs.1
}
