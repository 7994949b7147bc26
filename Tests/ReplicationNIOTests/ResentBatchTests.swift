import Foundation
import NIOPosix
import ReplicationCore
import ReplicationNIO
import ReplicationTestSupport
import StreamLog
import Testing

/// A writer that lost its connection sends again what it had not seen acknowledged: real sockets against a
/// server on the in-memory log and on the SQLite log.
@Suite(.serialized) struct ResentBatchTests {
    enum LogKind: String, CaseIterable, CustomTestStringConvertible {
        case inMemory, sqlite
        var testDescription: String { rawValue }
    }

    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("resent-\(UUID().uuidString)").path
    let configuration = ServerConfiguration(serverName: "test.local", writers: ["pub"])

    func start(_ kind: LogKind) async throws -> ServerFixture {
        let log: any StreamLog =
            switch kind {
            case .inMemory: InMemoryStreamLog()
            case .sqlite: try SQLiteStreamLog(directory: directory, clock: { ConnectionClock.system.wallMillis })
            }
        return try await ServerFixture.start(configuration, log: log)
    }

    func ev(_ index: Int) -> String { eventRow(index) }

    /// The writer's acknowledgements up to `POSITION events <last>` (or an `ERROR`).
    func answers(_ writer: LineSocket, through last: Int) throws -> [String] {
        try writer.readLines(until: { $0 == "POSITION events \(last)" || $0.hasPrefix("ERROR") }, timeoutMillis: 30_000)
    }

    func positions(_ tokens: [Int]) -> [String] { tokens.map { "POSITION events \($0)" } }

    /// Waits until the writer's connection (`nil` when there is none) is as wanted. A writer's rows are
    /// taken and handed to the log in one turn of its event loop, which a snapshot waits for.
    func waitForWriter(_ fixture: ServerFixture, until wanted: (ConnectionSnapshot?) -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while !wanted(
            try await fixture.server.hub.connectionSnapshots(on: MultiThreadedEventLoopGroup.singleton.next()).get()
                .first { $0.name == "pub" })
        {
            guard ContinuousClock.now < deadline else { throw SocketError("the writer's connection never got there") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    @Test(arguments: LogKind.allCases)
    func aBatchSentAgainIsAcknowledgedAgainAndStoredOnce(_ kind: LogKind) async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fixture = try await start(kind)
        // One-row batches (a run), a batch of two rows, a position advance and a row.
        let original =
            "RDATA events 1 \(ev(1))\nRDATA events 2 \(ev(2))\nRDATA events batch \(ev(30))\nRDATA events 3 \(ev(3))\n"
            + "POSITION events 4\nRDATA events 5 \(ev(5))\n"
        let first = try fixture.connect(name: "pub")
        try first.send(original)
        #expect(try answers(first, through: 5) == positions([1, 2, 3, 4, 5]))
        first.close()  // as if the acknowledgements had been lost with the connection

        // Everything again, then new rows: the old ones acknowledged as the first time, the new ones stored.
        let second = try fixture.connect(name: "pub")
        try second.send(original + "RDATA events 6 \(ev(6))\nRDATA events 7 \(ev(7))\n")
        #expect(try answers(second, through: 7) == positions([1, 2, 3, 4, 5, 6, 7]))
        second.close()

        // A run of one-row batches that starts before the head and ends after it.
        let third = try fixture.connect(name: "pub")
        try third.send((6...9).map { "RDATA events \($0) \(ev($0))\n" }.joined())
        #expect(try answers(third, through: 9) == positions([6, 7, 8, 9]))

        let worker = try fixture.connect(name: "worker")
        try worker.send("REPLICATE events 0\n")
        let expected =
            [
                "RDATA events 1 \(ev(1))", "RDATA events 2 \(ev(2))", "RDATA events 3 \(ev(30))",
                "RDATA events 3 \(ev(3))",
            ]
            + [5, 6, 7, 8, 9].map { "RDATA events \($0) \(ev($0))" } + ["POSITION events 9"]
        #expect(try worker.readLines(expected.count) == expected)  // every row once
        #expect(fixture.log.currentToken(of: .events) == 9)
        #expect(fixture.server.hub.countersSnapshot.writerResentBatches >= 3)
        try await fixture.stop()
    }

    @Test(arguments: LogKind.allCases)
    func aBatchSentAgainDifferentlyIsRefusedNamingTheFirstDifference(_ kind: LogKind) async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fixture = try await start(kind)
        let writer = try fixture.connect(name: "pub")
        try writer.send(
            "RDATA events 1 \(ev(1))\nRDATA events batch \(ev(20))\nRDATA events 2 \(ev(2))\nRDATA events 5 \(ev(5))\n")
        #expect(try answers(writer, through: 5) == positions([1, 2, 5]))
        writer.close()

        let cases = [
            // `["ev", ["$1-…` and `["ev", ["$99-…` part at the 11th byte.
            (
                "RDATA events 1 \(ev(99))", "RDATA events 1",
                "row 1 of 1 at token 1 differs from the stored row at byte 11"
            ),
            ("RDATA events 2 \(ev(2))", "RDATA events 2", "the log stores 2 rows at token 2, the re-sent batch has 1"),
            ("POSITION events 2", "POSITION events 2", "the log stores 2 rows at token 2, the re-sent batch has 0"),
            ("RDATA events 3 \(ev(3))", "RDATA events 3", "nothing is stored at token 3"),
        ].map { sent, refused, why in
            (
                sent,
                "ERROR rejected \(refused): token must be greater than the stream's current token 5, or repeat what is stored: \(why)"
            )
        }
        for (sent, refusal) in cases {
            let again = try fixture.connect(name: "pub")
            try again.send(sent + "\n")
            #expect(try again.readLine(timeoutMillis: 30_000) == refusal)
            #expect(try again.readsEndOfStream())
        }
        // A position the stream has passed, with nothing stored at it, repeats nothing that differs.
        let position = try fixture.connect(name: "pub")
        try position.send("POSITION events 3\nRDATA events 6 \(ev(6))\n")
        #expect(try answers(position, through: 6) == positions([3, 6]))

        let worker = try fixture.connect(name: "worker")
        try worker.send("REPLICATE events 0\n")
        let expected =
            [
                "RDATA events 1 \(ev(1))", "RDATA events 2 \(ev(20))", "RDATA events 2 \(ev(2))",
                "RDATA events 5 \(ev(5))",
            ]
            + ["RDATA events 6 \(ev(6))", "POSITION events 6"]
        #expect(try worker.readLines(expected.count) == expected)
        #expect(fixture.server.hub.countersSnapshot.writerRejections == cases.count)
        try await fixture.stop()
    }

    @Test func aBatchSentAgainWhileItsFirstSendingIsStillBeingCommittedIsAcknowledgedOnceCommitted() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // The commit thread is held, so that the first connection's rows are accepted but not committed.
        let commits = NIOThreadPool(numberOfThreads: 1)
        commits.start()
        let gate = DispatchSemaphore(value: 0)
        commits.submit { _ in gate.wait() }
        defer { gate.signal() }  // whatever the test finds, the thread is let go
        let log = try SQLiteStreamLog(
            directory: directory, commitPool: commits, clock: { ConnectionClock.system.wallMillis })
        let fixture = try await ServerFixture.start(configuration, log: log)
        let rows = (1...3).map { "RDATA events \($0) \(ev($0))\n" }.joined()
        let first = try fixture.connect(name: "pub")
        try first.send(rows)
        try await waitForWriter(fixture) { $0?.counters.inbound(.RDATA) == 3 }
        first.close()
        try await waitForWriter(fixture) { $0 == nil }
        let second = try fixture.connect(name: "pub")
        try second.send(rows)
        // Refused against the accepted head, the rows are being compared: the comparison waits for the commit.
        try await waitForWriter(fixture) { $0?.counters.inbound(.RDATA) == 3 }
        gate.signal()
        #expect(try answers(second, through: 3) == positions([1, 2, 3]))

        let worker = try fixture.connect(name: "worker")
        try worker.send("REPLICATE events 0\n")
        let expected = (1...3).map { "RDATA events \($0) \(ev($0))" } + ["POSITION events 3"]
        #expect(try worker.readLines(expected.count) == expected)
        try await fixture.stop()
        try await commits.shutdownGracefully()
    }

    @Test func aBatchSentAgainAfterItsRowsWerePrunedIsRefused() async throws {
        let fixture = try await ServerFixture.start(configuration, log: InMemoryStreamLog(retainRows: 2))
        let writer = try fixture.connect(name: "pub")
        try writer.send((1...5).map { "RDATA events \($0) \(ev($0))\n" }.joined())
        #expect(try answers(writer, through: 5).last == "POSITION events 5")
        writer.close()

        let again = try fixture.connect(name: "pub")
        try again.send("RDATA events 1 \(ev(1))\n")
        #expect(
            try again.readLine(timeoutMillis: 30_000)
                == "ERROR rejected RDATA events 1: token must be greater than the stream's current token 5, or repeat "
                + "what is stored: the log keeps only the rows after token 3 to compare with")
        try await fixture.stop()
    }
}
