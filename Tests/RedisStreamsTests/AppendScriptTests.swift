import NIOCore
import RedisClient
import ReplicationCore
import ReplicationTestSupport
import StreamLog
import XCTest

@testable import RedisStreams

/// The append script run by a real `redis-server`: many entries to one key in one call, each checked against
/// the key's last token as the entries before it in the same call left it.
final class AppendScriptTests: XCTestCase {
    private var redis: RedisServer!
    private let entries = StreamEntries(prefix: StreamEntries.defaultPrefix(serverName: "test.local"))

    override func setUpWithError() throws {
        redis = try RedisServer()
    }

    override func tearDown() {
        redis = nil
    }

    private func run(_ tokens: ClosedRange<Int64>) -> NewBatch {
        let lines = tokens.map { "RDATA events \($0) [\"r\($0)\"]\n" }.joined()
        return .run(.events, lines: ByteBuffer(string: lines), tokens: Array(tokens))
    }

    private func append(_ batches: [NewBatch], floor: Int64 = 0) throws -> AppendScript.Reply? {
        let additions = try batches.flatMap { try XCTUnwrap(StreamEntries.additions(of: $0)) }
        let command = AppendScript.arguments(
            sha: nil, additions, entries: entries, floors: [Int64](repeating: floor, count: StreamName.all.count))
        return AppendScript.reply(try redis.reply(command))
    }

    func testOneCallFollowsTheKeysLastTokenAndRowsFromEntryToEntry() throws {
        let rows = RowTexts(["[\"made by the hub\"]", "[\"and another\"]"])
        let reply = try append([
            run(1...3), .rows(.events, rows, token: .next), run(5...6),
            // Its first token is the one the entry before it in this call took.
            run(6...9), run(10...11),
        ])
        XCTAssertEqual(reply?.added, [3, 4, 6])
        XCTAssertEqual(reply?.refusal?.lastToken, 6)
        XCTAssertEqual(
            reply?.refusal?.message, "ERR The ID specified in XADD is equal or smaller than the target stream top item")
        XCTAssertEqual(try redis.rowsAdded(entries.key(.events)), [3: 3, 4: 5, 6: 7])

        // A later call reads the key again: a token past the last is free, one at or before it is not.
        XCTAssertEqual(try append([run(7...8), .rows(.events, rows, token: .next)])?.added, [8, 9])
        XCTAssertEqual(try append([run(9...12)])?.refusal?.lastToken, 9)
        XCTAssertEqual(try redis.rowsAdded(entries.key(.events)), [3: 3, 4: 5, 6: 7, 8: 9, 9: 11])
    }

    func testAnEntryWithoutATokenTakesTheOneAfterTheFloorWhenRedisHasLess() throws {
        let rows = RowTexts(["[\"r\"]"])
        XCTAssertEqual(try append([.rows(.events, rows, token: .next)], floor: 41)?.added, [42])
        XCTAssertEqual(try append([.rows(.events, rows, token: .next), run(44...45)], floor: 0)?.added, [43, 45])
    }
}
