import Foundation
import NIOPosix
import ReplicationCore
import StreamLog
import Testing

/// `admin`'s two operations on a log written by ``SQLiteStreamLog`` and closed, as an operator runs them.
@Suite struct StreamLogAdminTests {
    let loop = MultiThreadedEventLoopGroup.singleton.next()
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("admin-\(UUID().uuidString)").path

    func open(retention: SQLiteStreamLog.Retention = .init(rows: nil, ageMillis: nil), clock: TestClock = TestClock())
        throws -> SQLiteStreamLog
    {
        try SQLiteStreamLog(directory: directory, sync: .normal, retention: retention, clock: clock.read)
    }

    func batch(_ token: Int64) -> NewBatch {
        NewBatch(stream: .caches, rows: ["[\(token), 0, 0]", "[\(token), 1, 0]"], token: .exactly(token))
    }

    /// A stream's head, oldest servable token and row count.
    func figures(_ state: StreamLogAdmin.StreamState) -> [Int64] {
        [state.head, state.oldestServable, Int64(state.rows)]
    }

    func rows(_ log: SQLiteStreamLog, after token: Int64) throws -> String {
        let page = try log.read(.caches, after: token, maxBytes: 1 << 20)
        #expect(page.reachedHead)
        return String(buffer: page.lines)
    }

    @Test func setHeadRemovesTheRowsAfterTheTokenAcrossAndInsideChunks() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try open()
        // Tokens 1 to 5 in one commit (one chunk), then 6 to 10 a commit (a chunk) each.
        _ = try await log.append((1...5).map(batch), on: loop).get()
        for token in Int64(6)...10 { _ = try await log.append([batch(token)], on: loop).get() }
        _ = try await log.append([NewBatch(stream: .typing, rows: [#"["!r", ["@u"]]"#], token: .exactly(4))], on: loop)
            .get()
        await log.close()
        var streams = try StreamLogAdmin.streams(directory: directory)
        #expect(figures(streams[StreamName.caches.index]) == [10, 0, 20])
        #expect(figures(streams[StreamName.typing.index]) == [4, 0, 1])

        let moved = try StreamLogAdmin.setHead(directory: directory, stream: .caches, to: 3)
        #expect(moved.previousHead == 10 && moved.rowsRemoved == 14)
        streams = try StreamLogAdmin.streams(directory: directory)
        #expect(figures(streams[StreamName.caches.index]) == [3, 0, 6])
        #expect(streams[StreamName.typing.index].head == 4)
        #expect(StreamLogCheck(directory: directory).isHealthy)

        let reopened = try open()
        #expect(reopened.currentToken(of: .caches) == 3)
        let expected = (1...3).map { "RDATA caches \($0) [\($0), 0, 0]\nRDATA caches \($0) [\($0), 1, 0]\n" }
        #expect(try rows(reopened, after: 0) == expected.joined())
        #expect(try rows(reopened, after: 2) == "RDATA caches 3 [3, 0, 0]\nRDATA caches 3 [3, 1, 0]\n")
        let refused = try await reopened.append([batch(3)], on: loop).get()
        guard case .failure(let error) = refused.first else {
            Issue.record("token 3 was taken again after the head moved back to it")
            return
        }
        #expect(error == .tokenNotAfterCurrent(current: 3))
        #expect(try await reopened.append([batch(4)], on: loop).get().map { try? $0.get().token } == [4])
        await reopened.close()
    }

    @Test func aHeadMovedBehindTheRetainedRowsLeavesOlderReadersFallenBehind() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let clock = TestClock()
        let log = try open(retention: .init(rows: 4, ageMillis: nil), clock: clock)
        for token in Int64(1)...6 {
            clock.advance(1_000)  // retention is applied at most once a second
            _ = try await log.append([batch(token)], on: loop).get()
            try await log.quiesce(on: loop).get()
        }
        await log.close()
        let oldest = try StreamLogAdmin.streams(directory: directory)[StreamName.caches.index].oldestServable
        #expect(oldest >= 2)

        #expect(try StreamLogAdmin.setHead(directory: directory, stream: .caches, to: 1).previousHead == 6)
        #expect(
            figures(try StreamLogAdmin.streams(directory: directory)[StreamName.caches.index]) == [1, 1, 0])
        let reopened = try open()
        #expect(throws: StreamLogError.fallenBehind(oldestServable: 1)) {
            try reopened.read(.caches, after: 0, maxBytes: 1024)
        }
        #expect(try rows(reopened, after: 1) == "")
        await reopened.close()
    }

    @Test func setHeadIsRefusedWhileTheLogIsOpenAndChangesNothing() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try open()
        _ = try await log.append([batch(1), batch(2)], on: loop).get()
        let inUse = #expect(throws: StreamLogAdmin.AdminError.self) {
            try StreamLogAdmin.setHead(directory: directory, stream: .caches, to: 1)
        }
        #expect(
            inUse?.description
                == "\(directory)/stream-log.sqlite3 is in use (a running server, or `check`): "
                + "stop the server, then run set-head again")
        #expect(log.currentToken(of: .caches) == 2)
        await log.close()
        #expect(try StreamLogAdmin.streams(directory: directory)[StreamName.caches.index].head == 2)
        let missing = #expect(throws: StreamLogAdmin.AdminError.self) {
            try StreamLogAdmin.setHead(directory: directory + "/nothing-here", stream: .caches, to: 1)
        }
        #expect(missing?.description == "there is no stream log at \(directory)/nothing-here/stream-log.sqlite3")
    }
}
