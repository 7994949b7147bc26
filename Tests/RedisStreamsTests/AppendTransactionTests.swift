import Logging
import NIOCore
import NIOPosix
import RedisClient
import ReplicationCore
import ReplicationNIO
import ReplicationTestSupport
import StreamLog
import XCTest

@testable import RedisStreams

/// Append transactions run by a real `redis-server`: the check, `WATCH` and `EXEC` add a publish's entries
/// only while every key is as the hub expects.
final class AppendTransactionTests: XCTestCase {
    private var redis: RedisServer!
    private let entries = StreamEntries(prefix: StreamEntries.defaultPrefix(serverName: "test.local"))
    private typealias Tip = AppendTransaction.Tip

    override func setUpWithError() throws {
        redis = try RedisServer()
    }

    override func tearDown() {
        redis = nil
    }

    private func run(_ tokens: ClosedRange<Int64>) throws -> [StreamEntries.Addition] {
        let lines = tokens.map { "RDATA events \($0) [\"r\($0)\"]\n" }.joined()
        return try XCTUnwrap(
            StreamEntries.additions(of: .run(.events, lines: ByteBuffer(string: lines), tokens: Array(tokens))))
    }

    private func noTips() -> [Tip?] { [Tip?](repeating: nil, count: StreamName.all.count) }

    /// Each stream's tip as the check reads it, with no transaction.
    private func probe(_ streams: [StreamName]) throws -> [StreamName: Tip?] {
        AppendTransaction.tips(
            try redis.reply(AppendTransaction.probe(streams, entries: entries)), of: streams)
    }

    /// Runs one transaction of `additions` to `events` expecting `tip`, as a hub does: `EXEC` once the check
    /// answered that the key is as expected, `DISCARD` otherwise. `meanwhile` runs between the check's answer
    /// and `EXEC`. Returns the check's answer and what the transaction did.
    private func transact(
        _ additions: [StreamEntries.Addition], expecting tip: Tip, meanwhile: () throws -> Void = {}
    ) throws -> (check: [StreamName: Tip?], outcome: AppendTransaction.Outcome) {
        var tips = noTips()
        tips[StreamName.events.index] = tip
        let expected = tips
        let planned = try XCTUnwrap(AppendTransaction.plan(additions, after: &tips))
        let connection = try RedisConnection(port: redis.port)
        defer { connection.close() }
        let queued = try connection.send(AppendTransaction.commands(additions, planned: planned, entries: entries))
        let streams = AppendTransaction.streams(of: additions)
        let check = AppendTransaction.tips(queued[1], of: streams)
        let asExpected = AppendTransaction.asExpected(check, expected, of: streams)
        try meanwhile()
        let ended = try connection.send([AppendTransaction.ending(asExpected: asExpected)])[0]
        return (check, asExpected ? AppendTransaction.outcome(ended) : .aborted)
    }

    func testPlanningFollowsTheTipsAndRefusesWhatOnlyTheScriptCanAnswer() throws {
        var tips = noTips()
        XCTAssertNil(AppendTransaction.plan(try run(1...3), after: &tips), "a key whose tip is not known")
        tips[StreamName.events.index] = Tip(token: 2, rowsAdded: 7)
        XCTAssertNil(AppendTransaction.plan(try run(2...3), after: &tips), "a first token taken")
        XCTAssertEqual(tips[StreamName.events.index], Tip(token: 2, rowsAdded: 7), "left as it was")
        let hubRow = try XCTUnwrap(
            StreamEntries.additions(of: .rows(.events, RowTexts(["[\"r\"]"]), token: .next)))
        XCTAssertNil(AppendTransaction.plan(try run(3...4) + hubRow, after: &tips), "a row the hub makes")
        XCTAssertEqual(
            AppendTransaction.plan(try run(3...4) + run(6...8), after: &tips),
            [.init(token: 4, rowsAdded: 9), .init(token: 8, rowsAdded: 12)])
        XCTAssertEqual(tips[StreamName.events.index], Tip(token: 8, rowsAdded: 12))
    }

    func testOnlyACheckThatFoundEveryKeyAsExpectedEndsInExec() {
        var expected = noTips()
        expected[StreamName.events.index] = Tip(token: 3, rowsAdded: 3)
        let asFound: [StreamName: Tip?] = [.events: Tip(token: 3, rowsAdded: 3)]
        XCTAssertTrue(AppendTransaction.asExpected(asFound, expected, of: [.events]))
        XCTAssertFalse(AppendTransaction.asExpected([.events: Tip(token: 3, rowsAdded: 4)], expected, of: [.events]))
        XCTAssertFalse(AppendTransaction.asExpected([.events: nil], expected, of: [.events]), "not a stream")
        XCTAssertFalse(AppendTransaction.asExpected(nil, expected, of: [.events]), "the check did not run")
        XCTAssertFalse(AppendTransaction.asExpected(asFound, expected, of: [.events, .caches]), "a key not checked")
        XCTAssertEqual(
            AppendTransaction.tips(.error("BUSY Redis is busy running a script"), of: [.events]), [.events: nil])
    }

    func testTheCheckReadsEachKeysLastTokenAndRowsAdded() throws {
        let empty = Tip(token: 0, rowsAdded: 0)
        XCTAssertEqual(try probe([.events, .caches]), [.events: empty, .caches: empty])
        let first = try transact(try run(1...3), expecting: empty)
        XCTAssertEqual(first.outcome, .added([3]))
        XCTAssertEqual(try probe([.events]), [.events: Tip(token: 3, rowsAdded: 3)])
        // A key that is not a stream has no tip: what is added to it goes through the script.
        _ = try redis.reply(["SET", entries.key(.caches), "not a stream"])
        XCTAssertEqual(try probe([.caches]), [.caches: nil])
    }

    func testEntriesAreAddedWithTheirRowsAddedWhileTheKeyIsAsExpected() throws {
        XCTAssertEqual(
            try transact(try run(1...3) + run(5...6), expecting: Tip(token: 0, rowsAdded: 0)).outcome, .added([3, 6]))
        XCTAssertEqual(try transact(try run(7...7), expecting: Tip(token: 6, rowsAdded: 5)).outcome, .added([7]))
        XCTAssertEqual(try redis.rowsAdded(entries.key(.events)), [3: 3, 6: 5, 7: 6])
    }

    func testAKeyNotAsExpectedAddsNothingAndTheCheckSaysHowItIs() throws {
        XCTAssertEqual(try transact(try run(1...3), expecting: Tip(token: 0, rowsAdded: 0)).outcome, .added([3]))
        // Another hub added 4...5 since: a transaction expecting 3 is discarded, though its tokens are free.
        _ = try transact(try run(4...5), expecting: Tip(token: 3, rowsAdded: 3))
        let stale = try transact(try run(8...9), expecting: Tip(token: 3, rowsAdded: 3))
        XCTAssertEqual(stale.outcome, .aborted)
        XCTAssertEqual(stale.check, [.events: Tip(token: 5, rowsAdded: 5)])
        XCTAssertEqual(try redis.rowsAdded(entries.key(.events)), [3: 3, 5: 5])
        // Expecting what the check said, it goes through.
        XCTAssertEqual(try transact(try run(8...9), expecting: Tip(token: 5, rowsAdded: 5)).outcome, .added([9]))
        XCTAssertEqual(try redis.rowsAdded(entries.key(.events)), [3: 3, 5: 5, 9: 7])
    }

    func testAnotherClientAddingAfterTheCheckMakesExecAddNothing() throws {
        XCTAssertEqual(try transact(try run(1...3), expecting: Tip(token: 0, rowsAdded: 0)).outcome, .added([3]))
        let raced = try transact(try run(4...5), expecting: Tip(token: 3, rowsAdded: 3)) {
            _ = try redis.reply(["XADD", entries.key(.events), "10-0", "position", "", "rows-added", "3"])
        }
        XCTAssertEqual(raced.check, [.events: Tip(token: 3, rowsAdded: 3)], "as expected when checked")
        XCTAssertEqual(raced.outcome, .aborted)
        XCTAssertEqual(try redis.rowsAdded(entries.key(.events)), [3: 3, 10: 3])
    }

    /// A hub sharing its streams through the test's Redis, with a log of its own.
    private final class Hub {
        let shared: RedisSharedStreams
        let hub: ReplicationHub
        let loop: any EventLoop

        init(redis: RedisServer, on loop: any EventLoop, url: String? = nil) throws {
            self.loop = loop
            var configuration = RedisStreamsConfiguration(
                endpoint: try RedisEndpoint(url: url ?? redis.url),
                entries: StreamEntries(prefix: StreamEntries.defaultPrefix(serverName: "test.local")),
                writeTimeout: .seconds(10), keepRows: 1_000_000)
            // No trimming pass runs a script while the test counts them.
            configuration.trimInterval = .hours(1)
            shared = RedisSharedStreams(
                configuration: configuration, eventLoop: loop, latencyBuckets: [1], logger: Logger(label: "test"))
            hub = ReplicationHub(log: InMemoryStreamLog(), shared: shared)
            shared.start(storingInto: hub)
        }

        /// Publishes one run of `tokens` and returns the last token acknowledged.
        func publish(_ tokens: ClosedRange<Int64>) throws -> Int64? { try acknowledged(tokens)?.token }

        /// Publishes one run of `tokens` and returns how the log stored its last entry.
        func acknowledged(_ tokens: ClosedRange<Int64>) throws -> AppendedBatch? {
            let lines = tokens.map { "RDATA events \($0) \(eventRow(Int($0)))\n" }.joined()
            let results = try shared.publish(
                [.run(.events, lines: ByteBuffer(string: lines), tokens: Array(tokens))], on: loop
            ).wait()
            return try results.last?.get()
        }

        deinit { try? shared.stop().wait() }
    }

    func testHubsTakingTurnsAddLargePublishesInTransactionsAndLearnWhatTheOtherAdded() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        var a: Hub? = try Hub(redis: redis, on: group.next())
        let b = try Hub(redis: redis, on: group.next())
        // 600 rows are about 80 KiB: a transaction.
        XCTAssertEqual(try a?.publish(1...600), 600)
        XCTAssertEqual(try redis.calls("exec"), 1)
        XCTAssertEqual(try b.publish(601...1200), 1200)
        XCTAssertEqual(try redis.calls("exec"), 2)
        // A last saw its own rows: its check finds B's after them, the transaction is discarded, and it goes
        // again expecting them.
        XCTAssertEqual(try a?.publish(1201...1800), 1800)
        XCTAssertEqual(a?.shared.currentStatistics.abortedTransactions, 1)
        XCTAssertEqual(try redis.calls("discard"), 1)
        XCTAssertEqual(try redis.calls("exec"), 3)
        // A few rows go through the append script.
        let scripts = try redis.calls("evalsha")
        XCTAssertEqual(try a?.publish(1801...1803), 1803)
        XCTAssertEqual(try redis.calls("evalsha"), scripts + 1)
        XCTAssertEqual(try redis.calls("exec"), 3)
        a = nil
        // Whichever way an entry was added, its rows-added counts every row through it.
        var rows: Int64 = 0
        var previous: Int64 = 0
        for (token, added) in try redis.rowsAdded(entries.key(.events)).sorted(by: { $0.key < $1.key }) {
            rows += token - previous
            previous = token
            XCTAssertEqual(added, rows, "entry \(token)")
        }
        XCTAssertEqual(rows, 1803)
    }

    /// Waits, up to a deadline, until Redis shows this hub's follower blocked in its `XREAD`.
    private func waitForTheFollowerToBlock() throws {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let clients = try redis.reply(["CLIENT", "LIST"]).string ?? ""
            if clients.split(separator: "\n").contains(where: {
                $0.contains("name=replication-sidecar-follower") && $0.contains("flags=b") && $0.contains("cmd=xread")
            }) {
                return
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
        XCTFail("the follower never blocked in XREAD")
    }

    func testAHubStoresItsOwnTransactionAsRedisAnswersItAndDoesNotReadItBack() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let a = try Hub(redis: redis, on: group.next())
        try waitForTheFollowerToBlock()
        // 600 rows are about 80 KiB: several entries, added by a transaction.
        let stored = try XCTUnwrap(try a.acknowledged(1...600))
        XCTAssertEqual(try redis.calls("exec"), 1)
        guard case .integer(let length) = try redis.reply(["XLEN", entries.key(.events)]) else {
            return XCTFail("no stream")
        }
        XCTAssertGreaterThan(length, 1)
        // Stored as the writer's one batch, not as the entries the follower would have read back.
        XCTAssertEqual(stored.previousToken, 0)
        XCTAssertEqual(stored.rowCount, 600)
        XCTAssertEqual(a.hub.log.currentToken(of: .events), 600)
        // The transaction ended the follower's blocked XREAD, and it read again after the stored entries.
        try waitForTheFollowerToBlock()
        let statistics = a.shared.currentStatistics
        XCTAssertEqual(statistics.entriesRead[StreamName.events.index], 0)
        XCTAssertEqual(statistics.redisTokens[StreamName.events.index], 600, "Redis's last token, as written")
        XCTAssertEqual(statistics.errors, [:])
    }

    func testAPublishWhoseKeyHasEntriesTheLogDoesNotIsStoredByTheFollowerAfterThem() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let a = try Hub(redis: redis, on: group.next())
        XCTAssertEqual(try a.publish(1...600), 600)
        // Another program's entry, which no hub stores: the log stays at 600 while the key is at 700.
        _ = try redis.reply(["XADD", entries.key(.events), "700-0", "note", "not a batch"])
        let stored = try XCTUnwrap(try a.acknowledged(701...1300))
        XCTAssertEqual(stored.token, 1300)
        XCTAssertEqual(try redis.calls("exec"), 2, "the first try was discarded: the key was not at 600")
        XCTAssertEqual(try redis.calls("discard"), 1)
        // Not stored as it answered (the log did not end at 700) but entry by entry as the follower read it.
        XCTAssertEqual(stored.previousToken, try XCTUnwrap(stored.token - Int64(stored.rowCount)))
        XCTAssertLessThan(stored.rowCount, 600)
        XCTAssertEqual(a.hub.log.currentToken(of: .events), 1300)
        let statistics = a.shared.currentStatistics
        XCTAssertGreaterThanOrEqual(statistics.entriesRead[StreamName.events.index], 2)
        // Read once or twice (by the follower, and just before a transaction), but not again and again.
        XCTAssertEqual(statistics.errors["entry"].map { (1...2).contains($0) }, true, "\(statistics.errors)")
        XCTAssertNil(statistics.errors["store"])
    }

    func testAHubWhoseUserMayNotUnblockReadsItsOwnTransactionBackAndStoresItOnce() throws {
        _ = try redis.reply(["ACL", "SETUSER", "sidecar", "on", ">secret", "~*", "&*", "+@all", "-@admin"])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let a = try Hub(redis: redis, on: group.next(), url: "redis://sidecar:secret@127.0.0.1:\(redis.port)")
        try waitForTheFollowerToBlock()
        XCTAssertEqual(try a.publish(1...600), 600)
        XCTAssertEqual(try a.publish(601...1200), 1200)
        XCTAssertEqual(try redis.calls("exec"), 2)
        XCTAssertEqual(try redis.rejectedCalls("client|unblock"), 1, "refused once, then not asked again")
        // The follower, woken by each transaction, read its entries back: the log has each row once.
        try waitForTheFollowerToBlock()
        XCTAssertEqual(a.hub.log.currentToken(of: .events), 1200)
        let statistics = a.shared.currentStatistics
        XCTAssertGreaterThan(statistics.entriesRead[StreamName.events.index], 0)
        XCTAssertEqual(statistics.errors, [:])
    }
}
