import Foundation
import NIOCore
import NIOPosix
import ReplicationCore
import StreamLog
import Testing

/// The durable log's stored form: rows kept as chunks of catch-up lines. Reading from any token, pages of
/// whole batches, retention by whole chunks, and databases written by the previous build (one table row
/// per stream row) migrated forward or refused.
@Suite struct LogChunksTests {
    let loop = MultiThreadedEventLoopGroup.singleton.next()
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chunks-\(UUID().uuidString)").path
    var file: String { directory + "/stream-log.sqlite3" }

    func open(retention: SQLiteStreamLog.Retention = .init(rows: nil, ageMillis: nil), clock: TestClock = TestClock())
        throws -> SQLiteStreamLog
    {
        try SQLiteStreamLog(directory: directory, sync: .normal, retention: retention, clock: clock.read)
    }

    /// Every line after `token`, read page by page, with the tokens the pages ended at.
    func readAll(_ log: SQLiteStreamLog, _ stream: StreamName, after token: Int64, pageBytes: Int) throws
        -> (lines: [String], pageEnds: [Int64])
    {
        var lines: [String] = []
        var ends: [Int64] = []
        var cursor = token
        while true {
            let page = try log.read(stream, after: cursor, maxBytes: pageBytes)
            let text = String(buffer: page.lines)
            let pageLines = text.split(separator: "\n").map(String.init)
            #expect(pageLines.count == page.rowCount)
            lines += pageLines
            cursor = page.endToken
            ends.append(cursor)
            if page.reachedHead { return (lines, ends) }
        }
    }

    func event(_ token: Int, _ seq: Int = 0) -> String {
        #"["ev", ["$\#(token)-\#(seq):x", "!r:x", "m.room.message", null, null, null]]"#
    }

    func line(_ token: Int, _ seq: Int = 0) -> String { "RDATA events \(token) " + event(token, seq) }

    /// Runs a Python sqlite3 script against the log's file (the previous build's database, or a look inside).
    func python(_ script: String) throws -> String {
        let process = Process()
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", "import sqlite3\nc = sqlite3.connect('\(file)')\n" + script]
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The database the previous build wrote (schema version 1: one table row per stream row), holding
    /// what `inserts` puts in.
    func writePreviousBuildDatabase(_ inserts: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        _ = try python(
            """
            c.executescript('''
            PRAGMA journal_mode = WAL;
            CREATE TABLE streams (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                current_token INTEGER NOT NULL, oldest_servable INTEGER NOT NULL);
            CREATE TABLE rows (stream INTEGER NOT NULL, token INTEGER NOT NULL, seq INTEGER NOT NULL,
                appended_at INTEGER NOT NULL, row TEXT NOT NULL, PRIMARY KEY (stream, token, seq)) WITHOUT ROWID;
            \(inserts)
            PRAGMA application_id = 1381190727;
            PRAGMA user_version = 1;
            ''')
            """)
    }

    @Test func manyBatchesInOneAppendAreReadFromAnyTokenOnBatchBoundaries() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // 3,000 batches of three rows and a run of 3,000 one-row batches, in one append: several chunks.
        var batches = (1...3_000).map { token in
            NewBatch(stream: .events, rows: (0..<3).map { event(token, $0) }, token: .exactly(Int64(token)))
        }
        var runLines = ByteBufferAllocator().buffer(capacity: 0)
        for token in 3_001...6_000 { runLines.writeString(line(token) + "\n") }
        batches.append(.run(.events, lines: runLines, tokens: (3_001...6_000).map(Int64.init)))
        let expected =
            (1...3_000).flatMap { token in (0..<3).map { line(token, $0) } } + (3_001...6_000).map { line($0) }
        do {
            let log = try open()
            let results = try log.append(batches, on: loop).wait()
            #expect(results.count == batches.count && results.allSatisfy { (try? $0.get()) != nil })
        }
        let log = try open()
        #expect(log.currentToken(of: .events) == 6_000)
        #expect(Int(try python("print(c.execute('SELECT count(*) FROM chunks').fetchone()[0])"))! >= 3)
        // The run is cut between rows: no chunk exceeds 256 KiB by more than a batch.
        #expect(
            Int(try python("print(c.execute('SELECT max(length(lines)) FROM chunks').fetchone()[0])"))! <= 256 * 1024
                + 512)
        let (all, ends) = try readAll(log, .events, after: 0, pageBytes: 100_000)
        #expect(all == expected)
        #expect(ends.count >= 3 && ends.last == 6_000)
        // Any token, in a batch, in a run, at a page's end, before the first and at the head.
        for start in [0, 1, 1_234, 2_999, 3_000, 3_001, 4_567, 5_999, 6_000] + ends.map(Int.init) {
            let (lines, _) = try readAll(log, .events, after: Int64(start), pageBytes: 100_000)
            let first = start < 3_000 ? start * 3 : 9_000 + (start - 3_000)
            #expect(lines == Array(expected[first...]), "reading after \(start)")
        }
        // A page ends after a whole batch: every page's last line carries the token it ends at.
        for end in ends.dropLast() {
            let firstLineAfter = try log.read(.events, after: end, maxBytes: 1).lines
            #expect(String(buffer: firstLineAfter).hasPrefix("RDATA events \(end + 1) "))
        }
    }

    @Test func aChunkThatWouldOverfillAPageWaitsForTheNext() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Ten commits of 2,000 rows (about 140 KB each: a chunk each, too large to be merged). A page of
        // 256 KiB holds one of them; with a second it would be a copy of both, past the page's size.
        let log = try open()
        for commit in 0..<10 {
            var lines = ByteBufferAllocator().buffer(capacity: 0)
            let tokens = (commit * 2_000 + 1)...(commit * 2_000 + 2_000)
            for token in tokens { lines.writeString(line(token) + "\n") }
            _ = try log.append([.run(.events, lines: lines, tokens: tokens.map(Int64.init))], on: loop).wait()
        }
        var pages: [LogPage] = []
        repeat {
            pages.append(try log.read(.events, after: pages.last?.endToken ?? 0, maxBytes: 256 * 1024))
        } while !pages.last!.reachedHead
        #expect(pages.map(\.rowCount) == Array(repeating: 2_000, count: 10))
        #expect(pages.flatMap { String(buffer: $0.lines).split(separator: "\n") } == (1...20_000).map { line($0)[...] })
    }

    @Test func theSmallChunksOfALightLoadAreMergedAndReadTheSame() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let clock = TestClock()
        let log = try open(clock: clock)
        let chunkCount = { Int(try self.python("print(c.execute('SELECT count(*) FROM chunks').fetchone()[0])"))! }
        // One row per commit, within one second: a chunk each, merged at most once a second.
        for token in 1...300 {
            _ = try log.append([event(token)], to: .events, token: .exactly(Int64(token)), on: loop).wait()
        }
        try log.quiesce(on: loop).wait()
        #expect(try chunkCount() >= 299)
        // A reader holds the last small chunk (the cache keeps it) before it is merged away.
        #expect(try readAll(log, .events, after: 299, pageBytes: 1 << 20).lines == [line(300)])
        // A second later a large commit (a chunk too big to merge) brings the merging round.
        clock.advance(1_000)
        let large = (301...1_300).map { NewBatch(stream: .events, rows: [event($0)], token: .exactly(Int64($0))) }
        _ = try log.append(large, on: loop).wait()
        try log.quiesce(on: loop).wait()
        #expect(try chunkCount() == 2)
        for start in [0, 1, 150, 299, 300, 301, 1_299] {
            let (lines, _) = try readAll(log, .events, after: Int64(start), pageBytes: 1 << 20)
            #expect(lines == (start + 1...1_300).map { line($0) }, "reading after \(start)")
        }
    }

    @Test func retentionDropsWholeChunksAndKeepsAtLeastTheRowsAsked() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let clock = TestClock()
        let log = try open(retention: .init(rows: 1_000, ageMillis: nil), clock: clock)
        // Ten commits of 500 one-row batches: each commit is at least one chunk.
        for commit in 0..<10 {
            clock.advance(1_000)  // pruning runs at most once a second
            let batches = (1...500).map {
                NewBatch(stream: .events, rows: [event(commit * 500 + $0)], token: .exactly(Int64(commit * 500 + $0)))
            }
            _ = try log.append(batches, on: loop).wait()
            try log.quiesce(on: loop).wait()
        }
        var oldest: Int64 = -1
        #expect {
            _ = try log.read(.events, after: 0, maxBytes: 1 << 20)
        } throws: { error in
            guard case .fallenBehind(let servable) = error as? StreamLogError else { return false }
            oldest = servable
            return true
        }
        // Whole chunks went: the oldest servable token ends a commit, at least 1,000 rows stay, and every
        // row after it is there.
        #expect(oldest % 500 == 0 && oldest <= 4_000 && oldest >= 3_000)
        let (rest, _) = try readAll(log, .events, after: oldest, pageBytes: 1 << 20)
        #expect(rest == (Int(oldest) + 1...5_000).map { line($0) })
        #expect(throws: StreamLogError.fallenBehind(oldestServable: oldest)) {
            try log.read(.events, after: oldest - 1, maxBytes: 1 << 20)
        }
    }

    @Test func aDatabaseOfThePreviousBuildIsMigratedForward() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // What the previous build wrote (schema version 1): one table row per stream row. `caches` is
        // stream 7: a batch of two rows at token 3, a row at 5, a position advance to 9, rows before 2 pruned.
        try writePreviousBuildDatabase(
            """
            INSERT INTO streams VALUES (7, 'caches', 9, 2);
            INSERT INTO rows VALUES (7, 3, 1, 1000, '["b", [], 1]'), (7, 3, 0, 1000, '["a", [], 1]'),
                (7, 5, 0, 1000, '["c", ["k"], 2]');
            """)
        do {
            let log = try open()
            #expect(log.currentToken(of: .caches) == 9)
            let page = try log.read(.caches, after: 2, maxBytes: 1 << 20)
            #expect(
                String(buffer: page.lines)
                    == "RDATA caches 3 [\"a\", [], 1]\nRDATA caches 3 [\"b\", [], 1]\nRDATA caches 5 [\"c\", [\"k\"], 2]\n"
            )
            #expect(page.rowCount == 3 && page.endToken == 9 && page.reachedHead)
            #expect(try log.read(.caches, after: 3, maxBytes: 1 << 20).rowCount == 1)
            #expect(throws: StreamLogError.fallenBehind(oldestServable: 2)) {
                try log.read(.caches, after: 1, maxBytes: 1 << 20)
            }
            #expect(try log.append(["[\"d\", [], 3]"], to: .caches, token: .exactly(10), on: loop).wait().token == 10)
        }
        #expect(
            try python(
                "print(c.execute('PRAGMA user_version').fetchone()[0], [r[0] for r in c.execute(\"SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name\")])"
            )
                == "2 ['chunks', 'streams']")
        let reopened = try open()
        #expect(
            try reopened.read(.caches, after: 5, maxBytes: 1 << 20).lines
                == ByteBuffer(string: "RDATA caches 10 [\"d\", [], 3]\n"))
    }

    @Test func aPreviousDatabaseThatCannotBeMigratedIsRefusedAndLeftAsItWas() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Version 1 with rows of a stream this build does not know (index 99).
        try writePreviousBuildDatabase("INSERT INTO rows VALUES (99, 1, 0, 1000, '[1]');")
        #expect { try open() } throws: {
            "\($0)".contains("cannot migrate \(file) to schema version 2") && "\($0)".contains("stream 99")
        }
        #expect(
            try python(
                "print(c.execute('PRAGMA user_version').fetchone()[0], c.execute('SELECT count(*) FROM rows').fetchone()[0])"
            )
                == "1 1")
    }
}
