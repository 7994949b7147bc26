import NIOCore
import RedisClient
import ReplicationCore
import ReplicationTestSupport
import StreamLog
import XCTest

@testable import RedisStreams

/// The trimming and catch-up scripts run by a real `redis-server`, and the entry ages behind trimming by age.
final class RetentionScriptTests: XCTestCase {
    private var redis: RedisServer!
    private let key = "replication-sidecar:{test.local}:events"

    override func setUpWithError() throws {
        redis = try RedisServer()
    }

    override func tearDown() {
        redis = nil
    }

    /// Adds a batch, one entry per token or per 16 KiB of a run, with the append script, as sidecars do.
    private func add(_ batch: NewBatch) throws {
        let command = AppendScript.arguments(
            sha: nil, try XCTUnwrap(StreamEntries.additions(of: batch)),
            entries: StreamEntries(prefix: StreamEntries.defaultPrefix(serverName: "test.local")),
            floors: [Int64](repeating: 0, count: StreamName.all.count))
        try redis.cli(command.map { String(buffer: $0) })
    }

    /// Adds a batch of `rowsEach` rows per token.
    private func add(_ tokens: [Int], rowsEach: Int = 1) throws {
        for token in tokens {
            let rows = RowTexts(Array(repeating: "[\"r\(token)\"]", count: rowsEach))
            try add(.rows(.events, rows, token: .exactly(Int64(token))))
        }
    }

    private func trim(keep: Int, batch: Int = 1_000, oldThrough: Int64? = nil) throws -> String {
        try redis.cli(TrimScript.arguments(sha: nil, keys: [key], keep: keep, batch: batch, oldThrough: [oldThrough]))
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The tokens the key holds, oldest first.
    private func tokens() throws -> [Int] {
        try redis.cli(["XRANGE", key, "-", "+"]).split(separator: "\n").compactMap {
            $0.hasSuffix("-0") ? Int($0.dropLast(2)) : nil
        }
    }

    func testTrimmingKeepsTheNewestEntriesAndTheLastOneTrimmable() throws {
        try add(Array(1...50))
        XCTAssertEqual(try trim(keep: 10), "39")
        // 41...50 are the newest ten; 40 stays to show that nothing after it was trimmed.
        XCTAssertEqual(try tokens(), Array(40...50))
        XCTAssertEqual(try trim(keep: 10), "0", "nothing more to trim")
    }

    func testTrimmingKeepsTheNewestRowsHoweverManyAnEntryHolds() throws {
        // Ten batches of five rows (50 rows), then a run of twenty one-row batches in one entry: 70 rows.
        try add(Array(1...10), rowsEach: 5)
        let run = (11...30).map { "RDATA events \($0) [\"r\($0)\"]\n" }.joined()
        try add(.run(.events, lines: ByteBuffer(string: run), tokens: Array(11...30)))
        XCTAssertEqual(try tokens(), Array(1...10) + [30])
        // The newest 25 rows are the run's 20 and batch 10's five: 9 is the newest that could go, and stays.
        XCTAssertEqual(try trim(keep: 25), "8")
        XCTAssertEqual(try tokens(), [9, 10, 30])
        XCTAssertEqual(try trim(keep: 20), "1")
        XCTAssertEqual(try tokens(), [10, 30])
        XCTAssertEqual(try trim(keep: 20), "0", "nothing more to trim")
    }

    func testEntriesWrittenWithoutARowCountAreOlderThanEveryCountedRow() throws {
        for token in 1...5 { try redis.cli(["XADD", key, "\(token)-0", "rows", "[\"r\(token)\"]\n"]) }
        XCTAssertEqual(try trim(keep: 1), "0", "no counted row yet: nothing is known to be beyond the newest")
        try add(Array(6...8))
        XCTAssertEqual(try trim(keep: 3), "4")
        XCTAssertEqual(try tokens(), [5, 6, 7, 8])
    }

    func testTrimmingByAgeKeepsEveryEntryNotYetOldEnough() throws {
        try add(Array(1...50))
        XCTAssertEqual(try trim(keep: 10, oldThrough: 0), "0", "no entry known to be old: none trimmed")
        XCTAssertEqual(try trim(keep: 10, oldThrough: 30), "29")
        XCTAssertEqual(try tokens(), Array(30...50))
        // The rows bound still holds when age would let more go.
        XCTAssertEqual(try trim(keep: 10, oldThrough: 48), "10")
        XCTAssertEqual(try tokens(), Array(40...50))
    }

    func testTrimmingTakesAtMostABatchAtATime() throws {
        try add(Array(1...150))
        XCTAssertEqual(try trim(keep: 10, batch: 5), "4")
        XCTAssertEqual(try tokens().first, 5)
        // More than one page of the oldest entries read (64 a page), up to the batch.
        XCTAssertEqual(try trim(keep: 10, batch: 100), "99")
        XCTAssertEqual(try tokens().first, 104)
        XCTAssertEqual(try trim(keep: 10), "36")
        XCTAssertEqual(try tokens(), Array(140...150))
    }

    /// Runs the catch-up script and makes a page of its reply.
    private func backfill(after: Int64, through: Int64, count: Int = 100) throws -> Result<LogPage, StreamLogError> {
        let reply = try redis.reply(
            LuaScript.evaluate(BackfillScript.source, sha: nil)
                + BackfillScript.arguments(key: key, after: after, through: through, count: count))
        return BackfillScript.page(reply, stream: .events, after: after, through: through, count: count)
    }

    private func refusal(_ result: Result<LogPage, StreamLogError>) -> StreamLogError? {
        if case .failure(let error) = result { error } else { nil }
    }

    private func lines(_ page: LogPage) -> [String] {
        page.lines.getString(at: page.lines.readerIndex, length: page.lines.readableBytes)!
            .split(separator: "\n").map(String.init)
    }

    func testACatchUpIsReadFromRedisOnlyWhenNothingAfterItsTokenWasTrimmed() throws {
        try add([5, 10, 15, 20])
        // Nothing ever trimmed: everything after any token is there.
        let whole = try backfill(after: 0, through: 15).get()
        XCTAssertEqual(
            lines(whole), ["RDATA events 5 [\"r5\"]", "RDATA events 10 [\"r10\"]", "RDATA events 15 [\"r15\"]"])
        XCTAssertEqual(whole.rowCount, 3)
        XCTAssertEqual(whole.endToken, 15)
        // A page of at most `count` entries ends at its last one.
        let first = try backfill(after: 0, through: 15, count: 2).get()
        XCTAssertEqual(first.endToken, 10)
        XCTAssertEqual(first.rowCount, 2)

        XCTAssertEqual(try trim(keep: 1), "2")
        XCTAssertEqual(try tokens(), [15, 20])
        // After 15 or 14 nothing is missing; after 9, token 10 was trimmed.
        XCTAssertEqual(lines(try backfill(after: 15, through: 20).get()), ["RDATA events 20 [\"r20\"]"])
        XCTAssertEqual(try backfill(after: 14, through: 15).get().rowCount, 1)
        XCTAssertEqual(try refusal(backfill(after: 9, through: 15)), .fallenBehind(oldestServable: 15))
        // Redis must also reach what the local log had.
        XCTAssertEqual(try refusal(backfill(after: 15, through: 25)), .fallenBehind(oldestServable: 25))
    }

    func testACatchUpFromRedisTakesOnlyTheRowsOfARunEntryAfterItsTokenThroughTheLocalLogs() throws {
        try add([2])
        let run = (3...8).map { "RDATA events \($0) [\"r\($0)\"]\n" }.joined()
        try add(.run(.events, lines: ByteBuffer(string: run), tokens: Array(3...8)))
        try add([9])
        // After 4 through 6: the run entry 8-0 starts before and ends after; only its rows 5 and 6.
        let inside = try backfill(after: 4, through: 6).get()
        XCTAssertEqual(lines(inside), ["RDATA events 5 [\"r5\"]", "RDATA events 6 [\"r6\"]"])
        XCTAssertEqual(inside.rowCount, 2)
        XCTAssertEqual(inside.endToken, 6)
        // A page of two entries ends at the run's last token.
        let first = try backfill(after: 0, through: 9, count: 2).get()
        XCTAssertEqual(lines(first), ["RDATA events 2 [\"r2\"]"] + run.split(separator: "\n").map(String.init))
        XCTAssertEqual(first.endToken, 8)
    }

    func testAnEntryIsOldOnceItsTokenWasSeenAtLeastTheAgeAgo() {
        var ages = EntryAges(ageMillis: 6_400)
        func tokens(_ events: Int64) -> [Int64] {
            var tokens = [Int64](repeating: 0, count: StreamName.all.count)
            tokens[StreamName.events.index] = events
            return tokens
        }
        ages.record(tokens: tokens(10), at: 1_000)
        XCTAssertEqual(ages.oldThrough(.events, at: 7_399), 0, "nothing is that old yet")
        XCTAssertEqual(ages.oldThrough(.events, at: 7_400), 10)
        // At most one sample per 64th of the age (100 ms): this one is not kept.
        ages.record(tokens: tokens(20), at: 1_050)
        ages.record(tokens: tokens(30), at: 2_000)
        XCTAssertEqual(ages.oldThrough(.events, at: 8_399), 10)
        XCTAssertEqual(ages.oldThrough(.events, at: 8_400), 30)
        XCTAssertEqual(ages.oldThrough(.caches, at: 8_400), 0)
    }
}
