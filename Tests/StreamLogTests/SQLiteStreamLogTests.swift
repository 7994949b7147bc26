import Foundation
import NIOCore
import NIOEmbedded
import NIOPosix
import ReplicationCore
import StreamLog
import Synchronization
import Testing

/// A clock the test moves by hand.
final class TestClock: Sendable {
    let now = Mutex<Int64>(1_000_000)
    var read: @Sendable () -> Int64 { { self.now.withLock { $0 } } }
    func advance(_ millis: Int64) { now.withLock { $0 += millis } }
}

@Suite struct SQLiteStreamLogTests {
    let loop = MultiThreadedEventLoopGroup.singleton.next()
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("log-\(UUID().uuidString)").path

    func open(retention: SQLiteStreamLog.Retention = .init(rows: nil, ageMillis: nil), clock: TestClock = TestClock())
        throws -> SQLiteStreamLog
    {
        try SQLiteStreamLog(directory: directory, sync: .normal, retention: retention, clock: clock.read)
    }

    /// Appends and waits until the writer thread is idle again (pruning runs after a commit).
    func append(_ log: SQLiteStreamLog, _ rows: [String], token: AppendToken, _ stream: StreamName = .caches)
        throws -> AppendedBatch
    {
        let batch = try log.append(rows, to: stream, token: token, on: loop).wait()
        try log.quiesce(on: loop).wait()
        return batch
    }

    func allRows(_ log: SQLiteStreamLog, after token: Int64 = 0, pageBytes: Int = 1 << 20) throws -> (String, Int64) {
        var text = ""
        var cursor = token
        while true {
            let page = try log.read(.caches, after: cursor, maxBytes: pageBytes)
            text += String(buffer: page.lines)
            cursor = page.endToken
            if page.reachedHead { return (text, cursor) }
        }
    }

    @Test func appendsSurviveReopeningAndReadInBatchAlignedPages() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            let log = try open()
            let batch = try append(log, ["[1, 0, 0]", "[1, 1, 0]"], token: .exactly(1))
            #expect(String(buffer: batch.liveLines) == "RDATA caches batch [1, 0, 0]\nRDATA caches 1 [1, 1, 0]\n")
            for token in 2...20 { _ = try append(log, ["[\(token), 0, 0]", "[\(token), 1, 0]"], token: .exactly(Int64(token))) }
            #expect(try append(log, [], token: .exactly(25)).token == 25)
            #expect(throws: StreamLogError.tokenNotAfterCurrent(current: 25)) {
                try append(log, ["[1, 1, 1]"], token: .exactly(25))
            }
            #expect(log.currentToken(of: .caches) == 25)
        }
        let reopened = try open()
        #expect(reopened.currentToken(of: .caches) == 25)
        #expect(reopened.currentToken(of: .events) == 0)
        let page = try reopened.read(.caches, after: 0, maxBytes: 50)
        // A page ends on a batch boundary even when a batch crosses the byte budget.
        #expect(page.rowCount == 2 && page.endToken == 1 && !page.reachedHead)
        let (text, end) = try allRows(reopened, pageBytes: 50)
        #expect(end == 25)
        let expected = (1...20).map { "RDATA caches \($0) [\($0), 0, 0]\nRDATA caches \($0) [\($0), 1, 0]\n" }.joined()
        #expect(text == expected)
        #expect(try append(reopened, ["[9, 9, 9]"], token: .next).token == 26)
    }

    @Test func closingCheckpointsTheWALAndLeavesOneFile() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try open()
        for token in 1...50 { _ = try append(log, ["[\(token), 0, 0]"], token: .exactly(Int64(token))) }
        _ = try allRows(log)  // a reader connection is open too
        #expect(FileManager.default.fileExists(atPath: log.path + "-wal"))
        await log.close()
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(files == ["stream-log.sqlite3"])
        let reopened = try open()
        #expect(reopened.currentToken(of: .caches) == 50)
        #expect(try allRows(reopened).0.hasSuffix("RDATA caches 50 [50, 0, 0]\n"))
    }

    @Test func aNewLogHasLargePagesAndItsWALStartsOverUnderASteadyLoad() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try open()
        let wal = log.path + "-wal"
        let frameBytes = SQLiteStreamLog.pageSize + 24
        let row = "[0, \"" + String(repeating: "x", count: 10_000) + "\"]"
        var largestWAL = 0
        // About three times the checkpoint threshold in frames, committed one run of 25 rows at a time.
        let appends = 3 * Int(SQLiteStreamLog.checkpointFrames) * frameBytes / (25 * row.utf8.count)
        for append in 0..<appends {
            let tokens = (1...25).map { Int64(append * 25 + $0) }
            var lines = ByteBuffer()
            for token in tokens { lines.writeString("RDATA caches \(token) \(row)\n") }
            _ = try log.append([.run(.caches, lines: lines, tokens: tokens)], on: loop).wait()
            try log.quiesce(on: loop).wait()
            largestWAL = max(largestWAL, Int((try FileManager.default.attributesOfItem(atPath: wal)[.size] as? Int) ?? 0))
        }
        // The WAL is copied into the database past the threshold and reused from its start: it never
        // holds much more than the threshold's frames (one append adds about 17).
        #expect(largestWAL > 0)
        #expect(largestWAL <= (Int(SQLiteStreamLog.checkpointFrames) + 100) * frameBytes + 32)
        await log.close()
        let header = try FileHandle(forReadingFrom: URL(fileURLWithPath: log.path)).read(upToCount: 18) ?? Data()
        #expect(header.count == 18 && Int(header[16]) << 8 | Int(header[17]) == SQLiteStreamLog.pageSize)
        let reopened = try open()
        let head = Int64(appends * 25)
        #expect(reopened.currentToken(of: .caches) == head)
        let last = try reopened.read(.caches, after: head - 1, maxBytes: 1 << 20)
        #expect(String(buffer: last.lines) == "RDATA caches \(head) \(row)\n")
    }

    @Test func retentionKeepsTheNewestRowsAndRefusesReadersBehindThem() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let clock = TestClock()
        let log = try open(retention: .init(rows: 4, ageMillis: nil), clock: clock)
        for token in 1...5 {
            clock.advance(1_000)  // pruning runs at most once a second
            _ = try append(log, ["[\(token), 0, 0]", "[\(token), 1, 0]"], token: .exactly(Int64(token)))
        }
        #expect(throws: StreamLogError.fallenBehind(oldestServable: 3)) { try log.read(.caches, after: 2, maxBytes: 1 << 20) }
        let page = try log.read(.caches, after: 3, maxBytes: 1 << 20)
        #expect(page.rowCount == 4 && page.endToken == 5 && page.reachedHead)
    }

    @Test func anAgeBoundHoldsYoungRowsBack() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let clock = TestClock()
        let log = try open(retention: .init(rows: 1, ageMillis: 60_000), clock: clock)
        for token in 1...3 {
            clock.advance(1_000)
            _ = try append(log, ["[\(token), 0, 0]"], token: .exactly(Int64(token)))
        }
        #expect(try log.read(.caches, after: 0, maxBytes: 1 << 20).rowCount == 3)  // all young
        clock.advance(120_000)
        _ = try append(log, ["[4, 0, 0]"], token: .exactly(4))
        #expect(throws: StreamLogError.fallenBehind(oldestServable: 3)) { try log.read(.caches, after: 0, maxBytes: 1 << 20) }
    }

    @Test func aFileThatIsNotOurDatabaseIsRefusedAndLeftUntouched() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let file = directory + "/stream-log.sqlite3"
        let junk = Data("this is not a database, it is a text file that happens to be here\n".utf8)
        try junk.write(to: URL(fileURLWithPath: file))
        #expect { try open() } throws: { "\($0)".contains("is not a replication-sidecar stream log") }
        #expect(try Data(contentsOf: URL(fileURLWithPath: file)) == junk)
    }

    @Test func anotherApplicationsSQLiteDatabaseIsRefused() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let file = directory + "/stream-log.sqlite3"
        let made = Process()
        made.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        made.arguments = ["-c", "import sqlite3; c = sqlite3.connect('\(file)'); c.execute('CREATE TABLE t (x)'); c.commit()"]
        try made.run()
        made.waitUntilExit()
        let before = try Data(contentsOf: URL(fileURLWithPath: file))
        #expect { try open() } throws: { "\($0)".contains("is not a replication-sidecar stream log") }
        #expect(try Data(contentsOf: URL(fileURLWithPath: file)) == before)
    }

    @Test func aNewerSchemaIsRefused() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = try open()
        let bump = Process()
        bump.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        bump.arguments = ["-c", "import sqlite3; c = sqlite3.connect('\(directory)/stream-log.sqlite3'); c.execute('PRAGMA user_version = 99')"]
        try bump.run()
        bump.waitUntilExit()
        #expect { try open() } throws: { "\($0)".contains("schema version 99, newer than this build supports") }
    }

    @Test func aDataDirectoryThatCannotBeCreatedIsAClearError() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("file-\(UUID().uuidString)").path
        _ = FileManager.default.createFile(atPath: file, contents: Data("x".utf8))
        defer { try? FileManager.default.removeItem(atPath: file) }
        #expect {
            try SQLiteStreamLog(directory: file + "/data", clock: { 0 })
        } throws: { "\($0)".contains("cannot create the data directory \(file)/data") }
    }
}
