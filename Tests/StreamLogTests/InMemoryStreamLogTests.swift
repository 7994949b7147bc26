import NIOCore
import NIOEmbedded
import ReplicationCore
import StreamLog
import Testing

@Suite struct InMemoryStreamLogTests {
    let loop = EmbeddedEventLoop()

    func append(_ log: InMemoryStreamLog, _ rows: [String], _ stream: StreamName = .caches, token: AppendToken)
        throws -> AppendedBatch
    {
        try log.append(rows, to: stream, token: token, on: loop).wait()
    }

    func text(_ buffer: ByteBuffer) -> String { String(buffer: buffer) }

    @Test func appendsEncodeLiveBatchesOnce() throws {
        let log = InMemoryStreamLog()
        let batch = try append(log, ["[1, 2, 3]", "[4, 5, 6]"], token: .exactly(3))
        #expect(batch.previousToken == 0 && batch.token == 3 && batch.rowCount == 2)
        #expect(text(batch.liveLines) == "RDATA caches batch [1, 2, 3]\nRDATA caches 3 [4, 5, 6]\n")
        #expect(log.currentToken(of: .caches) == 3)
        #expect(log.currentToken(of: .events) == 0)
    }

    @Test func writerTokensMustIncrease() throws {
        let log = InMemoryStreamLog()
        _ = try append(log, ["[1, 2, 3]"], token: .exactly(3))
        #expect(throws: StreamLogError.tokenNotAfterCurrent(current: 3)) {
            try append(log, ["[1, 2, 3]"], token: .exactly(3))
        }
        #expect(try append(log, ["[1, 2, 3]"], token: .next).token == 4)
        #expect(try append(log, [], token: .exactly(9)).token == 9)
    }

    @Test func catchUpSendsEveryRowWithItsOwnTokenInPages() throws {
        let log = InMemoryStreamLog()
        for token in 1...10 { _ = try append(log, ["[\(token), 0, 0]", "[\(token), 1, 0]"], token: .exactly(Int64(token))) }
        _ = try append(log, [], token: .exactly(12))  // a position advance
        let firstPage = try log.read(.caches, after: 3, maxBytes: 60)
        #expect(
            text(firstPage.lines)
                == "RDATA caches 4 [4, 0, 0]\nRDATA caches 4 [4, 1, 0]\nRDATA caches 5 [5, 0, 0]\nRDATA caches 5 [5, 1, 0]\n")
        #expect(firstPage.rowCount == 4 && firstPage.endToken == 5 && !firstPage.reachedHead)
        var cursor = firstPage.endToken
        var rows = firstPage.rowCount
        while true {
            let page = try log.read(.caches, after: cursor, maxBytes: 60)
            rows += page.rowCount
            cursor = page.endToken
            if page.reachedHead { break }
        }
        #expect(rows == 14 && cursor == 12)
        let ahead = try log.read(.caches, after: 100, maxBytes: 60)
        #expect(ahead.rowCount == 0 && ahead.endToken == 12 && ahead.reachedHead)
    }

    @Test func retentionDropsWholeOldBatchesAndRefusesReadersBehindThem() throws {
        let log = InMemoryStreamLog(retainRows: 4)
        for token in 1...5 { _ = try append(log, ["[\(token), 0, 0]", "[\(token), 1, 0]"], token: .exactly(Int64(token))) }
        #expect(throws: StreamLogError.fallenBehind(oldestServable: 3)) { try log.read(.caches, after: 2, maxBytes: 1 << 20) }
        let page = try log.read(.caches, after: 3, maxBytes: 1 << 20)
        #expect(page.rowCount == 4 && page.endToken == 5 && page.reachedHead)
    }

    @Test func retentionDropsTheOldestRowsOfARunOneBatchAtATime() throws {
        let log = InMemoryStreamLog(retainRows: 2)
        let lines = (1...5).map { "RDATA typing \($0) [\"!r\", [\($0)]]\n" }.joined()
        _ = try log.append([.run(.typing, lines: ByteBuffer(string: lines), tokens: [1, 2, 3, 4, 5])], on: loop).wait()
        #expect(throws: StreamLogError.fallenBehind(oldestServable: 3)) { try log.read(.typing, after: 2, maxBytes: 1 << 20) }
        let page = try log.read(.typing, after: 3, maxBytes: 1 << 20)
        #expect(String(buffer: page.lines) == "RDATA typing 4 [\"!r\", [4]]\nRDATA typing 5 [\"!r\", [5]]\n")
        #expect(page.rowCount == 2 && page.endToken == 5)
    }
}
