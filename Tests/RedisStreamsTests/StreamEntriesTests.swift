import NIOCore
import RedisClient
import ReplicationCore
import StreamLog
import XCTest

@testable import RedisStreams

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
        XCTAssertEqual(String(buffer: additions[0].value), "[\"a\", 1]\n[\"b\", 2]\n")
        let back = try StreamEntries.batch(
            stream: .events, id: "7-0",
            fields: [.bulkString(ByteBuffer(string: "rows")), .bulkString(additions[0].value)]
        ).get()
        XCTAssertEqual(
            String(buffer: back.liveLines(token: 7)), "RDATA events batch [\"a\", 1]\nRDATA events 7 [\"b\", 2]\n")
    }

    func testARunIsCutIntoEntriesUnderTheirLastTokenAndReadsBackAsTheSameLines() throws {
        // 400 lines of 103 bytes: an entry closes with the line that reaches 16 KiB.
        let tokens = (1...400).map { Int64($0) * 2 }
        let text = tokens.map { "RDATA events \($0) [\"\(String(repeating: "x", count: 84 - String($0).count))\"]\n" }
        XCTAssertEqual(Set(text.map(\.utf8.count)), [103])
        let run = try XCTUnwrap(
            StreamEntries.additions(of: .run(.events, lines: ByteBuffer(string: text.joined()), tokens: tokens)))
        let perEntry = (StreamEntries.runEntryBytes + 102) / 103
        XCTAssertEqual(run.map(\.token), [tokens[perEntry - 1], tokens[2 * perEntry - 1], 800])
        XCTAssertEqual(run.map(\.firstToken), [2, tokens[perEntry], tokens[2 * perEntry]])
        XCTAssertEqual(Set(run.map(\.field)), ["run"])
        XCTAssertEqual(run.map { String(buffer: $0.value) }.joined(), text.joined())
        var readBack: [String] = []
        for entry in run {
            guard
                case .run(.events, let lines, let entryTokens) = try StreamEntries.batch(
                    stream: .events, id: "\(entry.token!)-0",
                    fields: [.bulkString(ByteBuffer(string: "run")), .bulkString(entry.value)]
                ).get()
            else { return XCTFail("a run entry reads back as a run") }
            XCTAssertEqual(entryTokens.first, entry.firstToken)
            XCTAssertEqual(entryTokens.last, entry.token)
            readBack.append(String(buffer: lines))
        }
        XCTAssertEqual(readBack.joined(), text.joined())
    }

    func testARunEntrysFirstTokenIsReadFromItsFirstLine() {
        let run: [RedisValue] = [
            .bulkString(ByteBuffer(string: "run")),
            .bulkString(ByteBuffer(string: "RDATA events 3 [1]\nRDATA events 5 [2]\n")),
        ]
        XCTAssertEqual(StreamEntries.firstRunToken(fields: run), 3)
        XCTAssertNil(
            StreamEntries.firstRunToken(fields: [
                .bulkString(ByteBuffer(string: "rows")), .bulkString(ByteBuffer(string: "[1]\n")),
            ]))
    }

    func testARunEntryThatIsNotRDATALinesEndingAtItsTokenIsRefused() {
        func read(_ id: String, _ text: String) -> Result<NewBatch, EntryError> {
            StreamEntries.batch(
                stream: .events, id: id,
                fields: [.bulkString(ByteBuffer(string: "run")), .bulkString(ByteBuffer(string: text))])
        }
        guard case .success = read("5-0", "RDATA events 3 [1]\nRDATA events 5 [2]\n") else {
            return XCTFail("a well-formed run entry is read")
        }
        for (id, text) in [
            ("6-0", "RDATA events 3 [1]\nRDATA events 5 [2]\n"),  // ID is not the last token
            ("5-0", "RDATA events 5 [1]\nRDATA events 5 [2]\n"),  // tokens not increasing
            ("5-0", "RDATA caches 3 [1]\nRDATA events 5 [2]\n"),  // another stream's line
            ("5-0", "RDATA events 3 [1]\nRDATA events 5\n"),  // no row
            ("5-0", "RDATA events 3 [1]\nRDATA events 5 [2]"),  // no newline at the end
            ("5-0", "RDATA events 99999999999999999999 [1]\n"),  // not a token
            ("5-0", ""),
        ] {
            guard case .failure(let error) = read(id, text) else { return XCTFail("read: \(text.debugDescription)") }
            XCTAssertTrue(error.description.contains(id), error.description)
        }
    }

    func testAPositionIsAnEmptyFieldAndARelaysStartIsNeverShared() throws {
        let position = try XCTUnwrap(StreamEntries.additions(of: .advance(.events, to: 9, forgettingEarlier: false)))
        XCTAssertEqual(position.map(\.field), ["position"])
        guard
            case .advance(.events, 9, false) = try StreamEntries.batch(
                stream: .events, id: "9-0",
                fields: [.bulkString(ByteBuffer(string: "position")), .bulkString(ByteBuffer())]
            ).get()
        else { return XCTFail("a position entry reads back as a position advance") }
        XCTAssertNil(StreamEntries.additions(of: .startingAt(.events, token: 4)), "a relay's start is never shared")
    }

    func testEntriesThatAreNotOursAreRefusedWithTheReason() {
        XCTAssertNil(StreamEntries.token(ofID: "5-1"))
        XCTAssertNil(StreamEntries.token(ofID: "0-0"))
        XCTAssertEqual(StreamEntries.token(ofID: "12-0"), 12)
        let bad = StreamEntries.batch(
            stream: .events, id: "5-0",
            fields: [.bulkString(ByteBuffer(string: "rows")), .bulkString(ByteBuffer(string: "x"))])
        guard case .failure(let error) = bad else { return XCTFail("a row without its newline is not ours") }
        XCTAssertTrue(error.description.contains("5-0"), error.description)
    }
}
