import Foundation
import NIOCore
import NIOPosix
import ReplicationCore
import StreamLog
import Testing

/// One append with several batches (all the rows of one read from a writer), on both logs.
@Suite struct AppendGroupTests {
    static let logs = ["in-memory", "sqlite"]

    let loop = MultiThreadedEventLoopGroup.singleton.next()
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("group-\(UUID().uuidString)").path

    func makeLog(_ kind: String) throws -> any StreamLog {
        kind == "sqlite"
            ? try SQLiteStreamLog(directory: directory, sync: .normal, clock: { 1_000 }) : InMemoryStreamLog()
    }

    func rows(_ log: any StreamLog, _ stream: StreamName = .events, after token: Int64 = 0) throws -> String {
        String(buffer: try log.read(stream, after: token, maxBytes: 1 << 20, on: loop).wait().lines)
    }

    @Test(arguments: logs) func batchesAreStoredInOrderAndEachIsAnswered(_ kind: String) throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try makeLog(kind)
        let results = try log.append(
            [
                NewBatch(stream: .events, rows: [#"["a"]"#], token: .exactly(1)),
                NewBatch(stream: .caches, rows: [#"["f", [], 1]"#, #"["g", [], 1]"#], token: .exactly(4)),
                NewBatch(stream: .events, rows: [], token: .exactly(2)),
            ], on: loop
        ).wait()
        #expect(results.map { try? $0.get().token } == [1, 4, 2])
        #expect(results.map { try? $0.get().previousToken } == [0, 0, 1])
        #expect(log.currentToken(of: .events) == 2 && log.currentToken(of: .caches) == 4)
        #expect(try rows(log, .caches) == "RDATA caches 4 [\"f\", [], 1]\nRDATA caches 4 [\"g\", [], 1]\n")
    }

    @Test(arguments: logs) func nothingAfterARefusedBatchIsStored(_ kind: String) throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try makeLog(kind)
        let results = try log.append(
            [
                NewBatch(stream: .events, rows: [#"["a"]"#], token: .exactly(5)),
                NewBatch(stream: .events, rows: [#"["b"]"#], token: .exactly(5)),
                NewBatch(stream: .events, rows: [#"["c"]"#], token: .exactly(6)),
            ], on: loop
        ).wait()
        #expect(results.count == 2)
        #expect((try? results[0].get().token) == 5)
        #expect(throws: StreamLogError.tokenNotAfterCurrent(current: 5)) { try results[1].get() }
        #expect(log.currentToken(of: .events) == 5)
        #expect(try rows(log, .events) == "RDATA events 5 [\"a\"]\n")
    }

    @Test(arguments: logs) func aStreamStartingAtATokenServesOnlyReadersFromThere(_ kind: String) throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var log = try makeLog(kind)
        let results = try log.append(
            [.startingAt(.events, token: 40), NewBatch(stream: .events, rows: [#"["a"]"#], token: .exactly(41))], on: loop
        ).wait()
        #expect(results.map { try? $0.get().token } == [40, 41])
        if kind == "sqlite" { log = try makeLog(kind) }  // it holds across a restart
        #expect(throws: StreamLogError.fallenBehind(oldestServable: 40)) { try log.read(.events, after: 39, maxBytes: 1 << 20, on: loop).wait() }
        #expect(try rows(log, after: 40) == "RDATA events 41 [\"a\"]\n")
        #expect(log.currentToken(of: .events) == 41)
    }

    /// A writer's lines for one-row batches, as `WriterIngest` hands them over.
    func run(_ tokens: [Int64], _ stream: StreamName = .events) -> NewBatch {
        let lines = tokens.map { "RDATA \(stream) \($0) [\"r\($0)\"]\n" }.joined()
        return .run(stream, lines: ByteBuffer(string: lines), tokens: tokens)
    }

    @Test(arguments: logs) func aRunIsStoredAsItsOneRowBatches(_ kind: String) throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var log = try makeLog(kind)
        let results = try log.append([run([3, 5, 8]), run([9])], on: loop).wait()
        let appended = try results.map { try $0.get() }
        #expect(appended.map(\.previousToken) == [0, 8] && appended.map(\.token) == [8, 9])
        #expect(appended.map(\.rowCount) == [3, 1])
        // Sent live as the writer sent them: every row with its own token.
        #expect(String(buffer: appended[0].liveLines) == "RDATA events 3 [\"r3\"]\nRDATA events 5 [\"r5\"]\nRDATA events 8 [\"r8\"]\n")
        if kind == "sqlite" { log = try makeLog(kind) }  // it holds across a restart
        #expect(
            try rows(log) == "RDATA events 3 [\"r3\"]\nRDATA events 5 [\"r5\"]\nRDATA events 8 [\"r8\"]\nRDATA events 9 [\"r9\"]\n")
        // A reader may start inside a run.
        #expect(try rows(log, after: 3) == "RDATA events 5 [\"r5\"]\nRDATA events 8 [\"r8\"]\nRDATA events 9 [\"r9\"]\n")
        #expect(try rows(log, after: 6) == "RDATA events 8 [\"r8\"]\nRDATA events 9 [\"r9\"]\n")
        #expect(try rows(log, after: 8) == "RDATA events 9 [\"r9\"]\n")
        #expect(try log.read(.events, after: 4, maxBytes: 1 << 20, on: loop).wait().rowCount == 3)
        #expect(try log.read(.events, after: 9, maxBytes: 1 << 20, on: loop).wait().rowCount == 0)
    }

    @Test(arguments: logs) func aRunIsRefusedByItsFirstToken(_ kind: String) throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try makeLog(kind)
        _ = try log.append([run([5])], on: loop).wait()
        let results = try log.append([run([5, 6]), run([7])], on: loop).wait()
        #expect(results.count == 1)
        #expect(throws: StreamLogError.tokenNotAfterCurrent(current: 5)) { try results[0].get() }
        #expect(log.currentToken(of: .events) == 5)
        #expect(try rows(log) == "RDATA events 5 [\"r5\"]\n")
    }

    @Test func aRunsRowsAreWhatFollowsTheTokenOnEachLineEachWithItsToken() {
        var rows: [String] = []
        run([3, 14]).forEachRow(storedAt: 14) { token, seq, row in
            rows.append("\(token).\(seq) " + String(decoding: row, as: UTF8.self))
        }
        #expect(rows == [#"3.0 ["r3"]"#, #"14.0 ["r14"]"#])
    }

    @Test func aBatchsRowsShareItsTokenInOrderAndAnAdvanceHasNone() {
        var rows: [String] = []
        let batch = NewBatch(stream: .events, rows: [#"["a"]"#, #"["b"]"#], token: .exactly(7))
        batch.forEachRow(storedAt: 7) { token, seq, row in
            rows.append("\(token).\(seq) " + String(decoding: row, as: UTF8.self))
        }
        #expect(rows == [#"7.0 ["a"]"#, #"7.1 ["b"]"#])
        let advance = NewBatch(stream: .events, rows: [], token: .exactly(9))
        guard case .advance(.events, to: 9, forgettingEarlier: false) = advance else {
            Issue.record("no rows under a writer's token is a position advance, got \(advance)")
            return
        }
        #expect(advance.rowCount == 0 && !advance.forgetsEarlier && NewBatch.startingAt(.events, token: 9).forgetsEarlier)
    }
}
