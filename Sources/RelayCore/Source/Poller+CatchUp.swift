import Logging

/// The catch-up edge: each subscription that is behind reads the API on its own, from its own position, and joins
/// the shared poll once it has reached it (docs/architecture.md, "Subscription cursors").
///
/// Behind, a subscription gets from the shared poll only late events before its position; its own read covers
/// `[position, seen-id horizon)`, a range the poll has read for good and whose ids it no longer keeps. There it
/// joins in one transaction: from then on the shared poll feeds it, and the events the poll saw at or after its
/// position before it joined are listed; a last "tail" read fetches those. So every event reaches it once, whatever the order in which the
/// edges run. Its reads yield the rate limit to the live edge, like the settle edge's.
extension Poller {
    func runCatchUpEdge() async throws {
        while !Task.isCancelled {
            try await catchUp()
            try await time.sleep(for: source.pollInterval)
        }
    }

    /// One pass over the subscriptions that are behind or joining, and the replays asked for: each reads on while
    /// its queue has room; a subscription joins the shared poll once its read reaches the seen-id horizon. Returns
    /// whether any read.
    @discardableResult
    public func catchUp() async throws -> Bool {
        var read = false
        if let store = subscriptionCursors {
            for cursor in try await store.subscriptionsNotCurrent(source: source.name) {
                guard let subscription = subscriptions[cursor.subscription] else { continue }
                read = try await catchUp(subscription, from: cursor, in: store) || read
            }
        }
        if let store = replays {
            for request in try await store.pendingReplays(of: subscriptions.names) {
                guard let subscription = subscriptions[request.subscription] else { continue }
                read = try await replay(request, for: subscription, in: store) || read
            }
        }
        return read
    }

    /// Reads a replay's range on from its position and queues what matches, under the original `webhook-id`s.
    private func replay(_ request: ReplayRequest, for subscription: SubscriptionConfig, in store: any ReplayStore) async throws -> Bool {
        let limit = subscription.webhook.maxQueued
        // A replay that filled the queue waits, like a catch-up, until it has drained below half.
        let depth = try await store.queueDepth(subscription.name)
        guard depth < (request.position == request.since ? limit : limit / 2) else { return false }
        if request.position == request.since {
            logger.notice(
                "replaying", metadata: [
                    "subscription": "\(subscription.name)", "since": "\(request.since.iso8601)", "until": "\(request.until.iso8601)",
                ])
        }
        let router = Router(subscriptions: [subscription])
        let (store, now, range, source) = (store, now, request.since..<request.until, source.name)
        if request.position < request.until {
            _ = try await walk.run(.catchUp, start: Self.queryStart(request.position), end: request.until, commit: { events, page in
                let mine = events.filter { range.contains($0.time) && !router.route($0).isEmpty }
                return try await store.queueReplay(
                    request.id, source: source, events: mine, through: page.isLast ? range.upperBound : min(page.readThrough, range.upperBound), limit: limit,
                    now: now())
            })
        }
        // Stopped short by a full queue: it goes on from there at a later pass.
        guard let read = try await store.replayRequest(request.id), read.position >= read.until else { return true }
        try await store.finishReplay(request.id, now: now())
        let done = try await store.replayRequest(request.id)
        logger.notice("replay done", metadata: ["subscription": "\(subscription.name)", "queued": .stringConvertible(done?.queued ?? 0)])
        return true
    }

    private func catchUp(_ subscription: SubscriptionConfig, from cursor: SubscriptionCursor, in store: any SubscriptionCursorStore) async throws -> Bool {
        guard var position = cursor.position else { return false }
        let name = subscription.name
        let router = Router(subscriptions: [subscription])
        if cursor.state == .behind {
            let limit = subscription.webhook.maxQueued
            let depth = try await store.queueDepth(name)
            // A full queue waits until it has drained below half, so that catching up reads in long runs.
            if depth >= (cursor.reason == .queueFull ? limit / 2 : limit) { return false }
            // Below the seen-id horizon the shared poll's ids are gone: that range is read here. From the horizon on
            // the join lists what the poll saw, so it joins as soon as its read gets there.
            let horizon = try await currentMarks().seenHorizon
            if position < horizon {
                logger.info(
                    "catching up: reading on its own", metadata: [
                        "subscription": "\(name)", "from": "\(position.iso8601)", "to": "\(horizon.iso8601)",
                        "reason": "\(cursor.reason?.rawValue ?? "-")",
                    ])
                let (store, now, source) = (store, now, source.name)
                let range = position..<horizon
                _ = try await walk.run(.catchUp, start: Self.queryStart(position), end: horizon, commit: { events, page in
                    let mine = events.filter { range.contains($0.time) && !router.route($0).isEmpty }
                    return try await store.queueCatchUp(
                        subscription: name, source: source, events: mine, through: page.isLast ? horizon : min(page.readThrough, horizon),
                        limit: limit, now: now())
                })
                guard let after = try await store.subscriptionCursor(name)?.position, after >= horizon else { return true }
                position = after
            }
            guard let joined = try await store.beginJoin(name), let start = joined.position else { return false }
            position = start
        }
        guard let tailUntil = try await store.subscriptionCursor(name)?.tailUntil else { return false }
        let (store, now) = (store, now)
        _ = try await walk.run(.catchUp, start: Self.queryStart(position), end: tailUntil, commit: { events, _ in
            try await store.queueTail(subscription: name, events: events.filter { !router.route($0).isEmpty }, now: now())
        })
        let missed = try await store.finishJoin(name)
        logger.notice(
            "caught up: joined the shared poll", metadata: ["subscription": "\(name)", "at": "\(position.iso8601)", "unmatched_tail": .stringConvertible(missed)])
        return true
    }
}
