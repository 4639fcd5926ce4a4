import Logging
import RelayCore
import Synchronization
import Testing

/// What the log lines look like to journald and to JSON log shippers, and how repeats are held back.
@Suite struct LogHandlerTests {
    final class Lines: Sendable {
        let written = Mutex<[String]>([])
        var all: [String] { written.withLock { $0 } }
    }

    static func logger(_ format: RelayLogHandler.Format, journal: Bool = false, repeats: RepeatLimiter = RepeatLimiter()) -> (Logger, Lines) {
        let lines = Lines()
        let handler = RelayLogHandler(
            label: "test", format: format, level: .trace, syslogPriorities: journal, repeats: repeats,
            write: { line in lines.written.withLock { $0.append(line) } })
        return (Logger(label: "test", factory: { _ in handler }), lines)
    }

    /// A time the test moves by hand, as the repeat limiter's clock.
    final class TestNow: Sendable {
        let now = Mutex(ContinuousClock.now)
        func advance(by duration: Duration) { now.withLock { $0 = $0.advanced(by: duration) } }
    }

    /// A logfmt handler at info level whose repeats are counted on a `TestNow`, for the tests of held-back lines.
    static func clockedLogger() -> (TestNow, RelayLogHandler, Logger, Lines) {
        let clock = TestNow()
        let lines = Lines()
        let handler = RelayLogHandler(
            label: "test", format: .logfmt, level: .info, repeats: RepeatLimiter(now: { clock.now.withLock { $0 } }),
            write: { line in lines.written.withLock { $0.append(line) } })
        return (clock, handler, Logger(label: "test", factory: { _ in handler }), lines)
    }

    @Test func jsonKeepsNumbersAndBooleansAsSuch() {
        let (logger, lines) = Self.logger(.json)
        logger.info(
            "started", metadata: ["sources": .stringConvertible(2), "ratio": .stringConvertible(0.5), "ok": .stringConvertible(true),
                                  "retry_in_s": .stringConvertible(LogSeconds(.seconds(30))), "event": "123", "list": [.stringConvertible(1), "a"]])
        let line = try! #require(lines.all.first)
        #expect(line.contains(#""sources":2"#), "\(line)")
        #expect(line.contains(#""ratio":0.5"#))
        #expect(line.contains(#""ok":true"#))
        #expect(line.contains(#""retry_in_s":30"#))
        // A string stays a string, even when it looks like a number: an id is not a quantity.
        #expect(line.contains(#""event":"123""#))
        #expect(line.contains(#""list":[1,"a"]"#))
    }

    @Test func secondsPrintAsPlainNumbers() {
        #expect(LogSeconds(.seconds(30)).description == "30")
        #expect(LogSeconds(.milliseconds(250)).description == "0.25")
        #expect(LogSeconds(.milliseconds(1500)).description == "1.5")
        #expect(LogSeconds(.zero).description == "0")
        let (logger, lines) = Self.logger(.logfmt)
        logger.warning("source unhealthy", metadata: ["retry_in_s": .stringConvertible(LogSeconds(.seconds(30)))])
        #expect(lines.all.first?.contains("retry_in_s=30 ") == true || lines.all.first?.hasSuffix("retry_in_s=30\n") == true)
    }

    @Test func underJournaldEachLineStartsWithItsPriority() {
        let (logger, lines) = Self.logger(.logfmt, journal: true)
        logger.debug("d")
        logger.info("i")
        logger.notice("n")
        logger.warning("w")
        logger.error("e")
        logger.critical("c")
        #expect(lines.all.map { String($0.prefix(3)) } == ["<7>", "<6>", "<5>", "<4>", "<3>", "<2>"])
        let (plain, plainLines) = Self.logger(.logfmt)
        plain.error("e")
        #expect(plainLines.all.first?.hasPrefix("ts=") == true)
        #expect(!RelayLogHandler.writesToJournal(environment: [:]))
        #expect(!RelayLogHandler.writesToJournal(environment: ["JOURNAL_STREAM": "1:1"]))
    }

    @Test func repeatedLinesAreHeldBackThenCounted() {
        let clock = TestNow()
        let repeats = RepeatLimiter(now: { clock.now.withLock { $0 } })
        let (logger, lines) = Self.logger(.logfmt, repeats: repeats)
        for _ in 0..<61 { logger.warning("dead-lettered", metadata: ["subscription": "bad"]) }
        // Another subscription's lines are their own.
        logger.warning("dead-lettered", metadata: ["subscription": "other"])
        #expect(lines.all.filter { $0.contains("subscription=bad") }.count == 10)
        #expect(lines.all.filter { $0.contains("subscription=other") }.count == 1)
        // Info and below are never held back.
        for _ in 0..<20 { logger.info("page") }
        #expect(lines.all.filter { $0.contains("msg=page") }.count == 20)

        clock.advance(by: .seconds(61))
        logger.warning("dead-lettered", metadata: ["subscription": "bad"])
        let summary = lines.all.first { $0.contains("suppressed 51 lines like: dead-lettered") }
        #expect(summary?.contains("subscription=bad") == true, "\(lines.all.suffix(3))")
        #expect(summary?.contains("suppressed=51") == true)
        // A new window: the line after the summary is written.
        #expect(lines.all.last?.contains("msg=dead-lettered") == true)
    }

    @Test func aBurstFollowedBySilenceIsStillCountedAndKindsAreKeptApart() {
        let (clock, handler, logger, lines) = Self.clockedLogger()
        for _ in 0..<15 { logger.warning("dead-lettered", metadata: ["subscription": "bad", "reason": "http_400"]) }
        // Another kind of failure of the same subscription is not hidden by the flood.
        logger.warning("dead-lettered", metadata: ["subscription": "bad", "reason": "timeout"])
        #expect(lines.all.filter { $0.contains("reason=http_400") }.count == 10)
        #expect(lines.all.filter { $0.contains("reason=timeout") }.count == 1)
        handler.writeSuppressedSummaries()
        #expect(!lines.all.contains { $0.contains("suppressed") }, "not before the window has ended")
        clock.advance(by: .seconds(60))
        handler.writeSuppressedSummaries()
        let summary = lines.all.last ?? ""
        #expect(summary.contains("suppressed 5 lines like: dead-lettered") && summary.contains("kind=http_400"), "\(summary)")
        handler.writeSuppressedSummaries()
        #expect(lines.all.filter { $0.contains("suppressed") }.count == 1, "each count is written once")
    }

    @Test func atTheStopCountsOfWindowsStillOpenAreWrittenToo() {
        let (clock, handler, logger, lines) = Self.clockedLogger()
        for _ in 0..<14 { logger.warning("dead-lettered", metadata: ["subscription": "bad"]) }
        for _ in 0..<3 { logger.warning("request failed", metadata: ["subscription": "bad"]) }
        clock.advance(by: .seconds(5))
        handler.writeSuppressedSummaries()
        #expect(!lines.all.contains { $0.contains("suppressed") }, "the window is still open")
        handler.writeSuppressedSummaries(stopping: true)
        let summaries = lines.all.filter { $0.contains("suppressed") }
        #expect(summaries.count == 1, "a key with nothing held back has no summary: \(summaries)")
        #expect(summaries.first?.contains("suppressed 4 lines like: dead-lettered") == true, "\(summaries)")
        handler.writeSuppressedSummaries(stopping: true)
        #expect(lines.all.filter { $0.contains("suppressed") }.count == 1, "each count is written once")
    }
}
