import NIOCore
import RedisClient
import RedisStreams
import ReplicationCore
import StreamLog
import XCTest

final class StreamEntriesTests: XCTestCase {
    private let entries = StreamEntries(prefix: StreamEntries.defaultPrefix(serverName: "test.local"))

    func testKeysCarryTheServerNameAsAHashTag() {
        XCTAssertEqual(entries.key(.events), "replication-sidecar:{test.local}:events")
        XCTAssertEqual(entries.stream(ofKey: "replication-sidecar:{test.local}:caches"), .caches)
        XCTAssertNil(entries.stream(ofKey: "replication-sidecar:{other}:caches"))
        XCTAssertNil(entries.stream(ofKey: "replication-sidecar:{test.local}:nonsense"))
    }

    func testABatchIsOneEntryUnderItsTokenAndReadsBackAsTheSameRows() throws {
        let batch = NewBatch(stream: .events, rows: [#"["a", 1]"#, #"["b", 2]"#], token: .exactly(7))
        let additions = try XCTUnwrap(StreamEntries.additions(of: batch))
        XCTAssertEqual(additions.count, 1)
        XCTAssertEqual(additions[0].token, 7)
        XCTAssertEqual(String(decoding: additions[0].value, as: UTF8.self), "[\"a\", 1]\n[\"b\", 2]\n")
        let back = try StreamEntries.batch(
            stream: .events, id: "7-0", fields: [.bulkString(Array("rows".utf8)), .bulkString(additions[0].value)]
        ).get()
        XCTAssertEqual(
            String(buffer: back.liveLines(token: 7)), "RDATA events batch [\"a\", 1]\nRDATA events 7 [\"b\", 2]\n")
    }

    func testARunIsOneEntryPerTokenAndAPositionAnEmptyField() throws {
        let lines = ByteBuffer(string: "RDATA events 3 [1]\nRDATA events 5 [2]\n")
        let run = try XCTUnwrap(StreamEntries.additions(of: .run(.events, lines: lines, tokens: [3, 5])))
        XCTAssertEqual(run.map(\.token), [3, 5])
        XCTAssertEqual(run.map { String(decoding: $0.value, as: UTF8.self) }, ["[1]\n", "[2]\n"])
        let position = try XCTUnwrap(StreamEntries.additions(of: .advance(.events, to: 9, forgettingEarlier: false)))
        XCTAssertEqual(position.map(\.field), ["position"])
        guard
            case .advance(.events, 9, false) = try StreamEntries.batch(
                stream: .events, id: "9-0", fields: [.bulkString(Array("position".utf8)), .bulkString([])]
            ).get()
        else { return XCTFail("a position entry reads back as a position advance") }
        XCTAssertNil(StreamEntries.additions(of: .startingAt(.events, token: 4)), "a relay's start is never shared")
    }

    func testEntriesThatAreNotOursAreRefusedWithTheReason() {
        XCTAssertNil(StreamEntries.token(ofID: "5-1"))
        XCTAssertNil(StreamEntries.token(ofID: "0-0"))
        XCTAssertEqual(StreamEntries.token(ofID: "12-0"), 12)
        let bad = StreamEntries.batch(
            stream: .events, id: "5-0", fields: [.bulkString(Array("rows".utf8)), .bulkString(Array("x".utf8))])
        guard case .failure(let error) = bad else { return XCTFail("a row without its newline is not ours") }
        XCTAssertTrue(error.description.contains("5-0"), error.description)
    }
}
