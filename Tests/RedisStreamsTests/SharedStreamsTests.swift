import Foundation
import ReplicationTestSupport
import XCTest

/// Sidecars sharing their streams through a real Redis (Debian's redis-server, append-only file fsynced on
/// every write), each a real `replication-sidecar serve` process.
final class SharedStreamsTests: XCTestCase {
    private var redis: RedisServer!

    override func setUpWithError() throws {
        redis = try RedisServer(appendOnly: true)
    }

    override func tearDown() {
        redis = nil
    }

    private func sidecar(_ extra: [String] = [], writeTimeout: String = "5") throws -> SidecarProcess {
        try SidecarProcess(
            serve: [
                "--redis", redis.url, "--server-name", "test.local", "--writer", "pub", "--redis-write-timeout",
                writeTimeout,
            ]
                + (extra.contains("--data-dir") ? extra : ["--in-memory"] + extra))
    }

    /// A connection that has read the greeting and sent `NAME`.
    private func connect(_ sidecar: SidecarProcess, name: String) throws -> LineSocket {
        let socket = try LineSocket(port: sidecar.port)
        _ = try socket.readLines(2)
        try socket.send("NAME \(name)\n")
        return socket
    }

    /// Subscribes to `events` after `token` and reads up to the `POSITION` that ends catch-up.
    private func subscribe(_ sidecar: SidecarProcess, after token: Int = 0) throws -> (LineSocket, [String]) {
        let socket = try connect(sidecar, name: "worker")
        try socket.send("REPLICATE events \(token)\n")
        let caughtUp = try socket.readLines { $0.hasPrefix("POSITION events") }
        return (socket, caughtUp.filter { $0.hasPrefix("RDATA") })
    }

    /// Reads `count` `RDATA` lines, skipping `PING`s.
    private func readRows(_ socket: LineSocket, _ count: Int) throws -> [String] {
        var rows: [String] = []
        while rows.count < count {
            guard let line = try socket.readLine() else { throw SocketError("closed after \(rows.count) rows") }
            if line.hasPrefix("RDATA") { rows.append(line) }
        }
        return rows
    }

    /// Publishes one row per token and waits for each acknowledgement.
    private func publish(_ writer: LineSocket, tokens: ClosedRange<Int>) throws {
        // In one write, so that rows that fit one read are one append (one entry, where a test counts them).
        try writer.send(tokens.map { "RDATA events \($0) \(eventRow($0))\n" }.joined())
        let acknowledged = try writer.readLines {
            $0 == "POSITION events \(tokens.upperBound)" || $0.hasPrefix("ERROR")
        }
        XCTAssertEqual(acknowledged.last, "POSITION events \(tokens.upperBound)", "\(acknowledged)")
    }

    /// Publishes one row per token, each once the one before is acknowledged: one Redis entry per token (rows
    /// sent together are a run, one entry per 16 KiB).
    private func publishOneByOne(_ writer: LineSocket, tokens: ClosedRange<Int>) throws {
        for token in tokens { try publish(writer, tokens: token...token) }
    }

    /// The value of one sample on a sidecar's metrics endpoint, e.g. `entries_read_total{stream_name="events"}`.
    private func metric(_ sidecar: SidecarProcess, _ sample: String) throws -> Double? {
        let socket = try LineSocket(port: sidecar.metricsPort)
        defer { socket.close() }
        let name = "replication_sidecar_redis_streams_" + sample + " "
        let line = try socket.http("GET", "/metrics").text.split(separator: "\n").first { $0.hasPrefix(name) }
        return line.flatMap { Double($0.dropFirst(name.count)) }
    }

    /// The status code of a probe on a sidecar's metrics endpoint.
    private func probe(_ sidecar: SidecarProcess, _ path: String) throws -> Int {
        let socket = try LineSocket(port: sidecar.metricsPort)
        defer { socket.close() }
        return try socket.http("GET", path).status
    }

    private func rowLines(_ tokens: ClosedRange<Int>) -> [String] {
        tokens.map { "RDATA events \($0) \(eventRow($0))" }
    }

    func testRowsOfAWriterOnOneSidecarReachAWorkerOnAnother() throws {
        let a = try sidecar()
        let b = try sidecar()
        let (worker, caughtUp) = try subscribe(b)
        XCTAssertEqual(caughtUp, [])
        let writer = try connect(a, name: "pub")
        try writer.send("RDATA events batch \(eventRow(1))\nRDATA events 2 \(eventRow(2))\n")
        XCTAssertEqual(try writer.readLine(), "POSITION events 2")
        // 598 one-row batches sent at once (about 60 KiB): runs of them are entries of about 16 KiB.
        try publish(writer, tokens: 3...600)
        XCTAssertEqual(
            try readRows(worker, 600), ["RDATA events batch \(eventRow(1))"] + rowLines(2...600))
        // The batch is one entry under its token, the runs fewer entries than rows, each under its last token.
        let events = "replication-sidecar:{test.local}:events"
        let entries = try XCTUnwrap(
            Int(try redis.cli(["XLEN", events]).trimmingCharacters(in: .whitespacesAndNewlines)))
        XCTAssertLessThan(entries, 100)
        XCTAssertEqual(
            try redis.cli(["XREVRANGE", events, "+", "-", "COUNT", "1"]).split(separator: "\n").first, "600-0")
        // A worker on the writer's own sidecar sees the same rows, from its log (catch-up gives every row its
        // batch's token).
        let (_, onA) = try subscribe(a)
        XCTAssertEqual(onA, ["RDATA events 2 \(eventRow(1))"] + rowLines(2...600))
        XCTAssertEqual(try metric(a, #"entries_written_total{stream_name="events"}"#), Double(entries))
        XCTAssertEqual(try metric(a, #"entries_read_total{stream_name="events"}"#), Double(entries))
        XCTAssertEqual(try metric(b, #"entries_written_total{stream_name="events"}"#), 0)
        XCTAssertEqual(try metric(b, #"entries_read_total{stream_name="events"}"#), Double(entries))
        XCTAssertEqual(try metric(b, #"lag_tokens{stream_name="events"}"#), 0)
        XCTAssertEqual(try metric(b, #"connected{role="follower"}"#), 1)
        XCTAssertEqual(try metric(a, "command_seconds_count"), try metric(a, #"command_seconds_bucket{le="+Inf"}"#))
        XCTAssertGreaterThan(try XCTUnwrap(try metric(a, "command_seconds_count")), 0)
    }

    func testSidecarsShareTheirStreamsThroughARedisOverTLS() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("shared-tls-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let certificates = try TestCertificates(in: directory.path)
        let tlsRedis = try RedisServer(tls: certificates)
        func tlsSidecar() throws -> SidecarProcess {
            try SidecarProcess(
                serve: [
                    "--redis", tlsRedis.url, "--redis-ca", certificates.caCertificate, "--server-name", "test.local",
                    "--writer", "pub", "--in-memory",
                ])
        }
        let a = try tlsSidecar()
        let b = try tlsSidecar()
        let (worker, _) = try subscribe(b)
        try publish(try connect(a, name: "pub"), tokens: 1...3)
        XCTAssertEqual(try readRows(worker, 3), rowLines(1...3))
        XCTAssertEqual(
            try tlsRedis.cli(["XLEN", "replication-sidecar:{test.local}:events"]).trimmingCharacters(
                in: .whitespacesAndNewlines),
            "1")
    }

    func testTwoWritersRacingForTheSameTokensTakeEachOnce() throws {
        let a = try sidecar()
        let b = try sidecar()
        let writerA = try connect(a, name: "pub")
        let writerB = try connect(b, name: "pub")
        // Both claim tokens 1...50 at once; each token is taken by exactly one of them.
        try writerA.send(
            (1...50).map { "RDATA events \($0) [\"a\", [\"$\($0)\", \"!r\", \"m\", null, null, null]]\n" }.joined())
        try writerB.send(
            (1...50).map { "RDATA events \($0) [\"b\", [\"$\($0)\", \"!r\", \"m\", null, null, null]]\n" }.joined())
        let answersA = try writerA.readLines { $0.hasPrefix("ERROR") || $0 == "POSITION events 50" }
        let answersB = try writerB.readLines { $0.hasPrefix("ERROR") || $0 == "POSITION events 50" }
        // The first batch to reach Redis wins every token: the other's first token is already taken.
        let (winner, loser) = answersA.last == "POSITION events 50" ? ("a", answersB) : ("b", answersA)
        XCTAssertEqual(
            [answersA, answersB].filter { $0.last == "POSITION events 50" }.count, 1, "\(answersA) \(answersB)")
        XCTAssertEqual(loser.filter { $0.hasPrefix("POSITION") }, [], "nothing of the loser's acknowledged")
        let refusal = try XCTUnwrap(loser.last)
        XCTAssertTrue(
            refusal.hasPrefix("ERROR rejected RDATA events 1: token must be greater than the stream's current token "),
            refusal)
        let (_, onA) = try subscribe(a)
        let (_, onB) = try subscribe(b)
        let expected = (1...50).map {
            "RDATA events \($0) [\"\(winner)\", [\"$\($0)\", \"!r\", \"m\", null, null, null]]"
        }
        XCTAssertEqual(onA, expected)
        XCTAssertEqual(onB, expected)
    }

    func testAWriterSendingAgainOnAnotherSidecarIsAcknowledgedAndStoredOnce() throws {
        let a = try sidecar()
        let b = try sidecar()
        let (worker, _) = try subscribe(a)
        let first = try connect(a, name: "pub")
        try publish(first, tokens: 1...50)
        first.close()
        // The writer comes back on B, not knowing what was stored: everything again, then new rows.
        let again = try connect(b, name: "pub")
        try again.send((1...60).map { "RDATA events \($0) \(eventRow($0))\n" }.joined())
        let acknowledged = try again.readLines { $0 == "POSITION events 60" || $0.hasPrefix("ERROR") }
        XCTAssertEqual(acknowledged, (1...60).map { "POSITION events \($0)" })
        XCTAssertEqual(try readRows(worker, 60), rowLines(1...60))
        XCTAssertEqual(
            try redis.cli(["XREVRANGE", "replication-sidecar:{test.local}:events", "+", "-", "COUNT", "1"])
                .split(separator: "\n").first, "60-0")
        // A changed row is refused, naming it.
        let changed = try connect(b, name: "pub")
        try changed.send("RDATA events 7 \(eventRow(70))\n")
        XCTAssertEqual(
            try changed.readLine(),
            "ERROR rejected RDATA events 7: token must be greater than the stream's current token 60, or repeat what "
                + "is stored: row 1 of 1 at token 7 differs from the stored row at byte 12")
    }

    func testARunWhoseFirstTokenIsTakenIsRefusedThoughItsLastIsFree() throws {
        let a = try sidecar()
        let b = try sidecar()
        try publish(try connect(a, name: "pub"), tokens: 1...10)
        // One read, one run entry: Redis itself would take its ID 12-0 after 10-0; the script sees that 5 is
        // taken.
        let late = try connect(b, name: "pub")
        try late.send(rowLines(5...5).joined() + "\n" + rowLines(12...12).joined() + "\n")
        let refusal = try XCTUnwrap(try late.readLines { $0.hasPrefix("ERROR") || $0.hasPrefix("POSITION") }.last)
        XCTAssertTrue(
            refusal.hasPrefix("ERROR rejected RDATA events ")
                && refusal.contains("token must be greater than the stream's current token 10"), refusal)
        XCTAssertEqual(try metric(b, #"refused_writes_total{reason="token_taken"}"#), 1)
        try publish(try connect(b, name: "pub"), tokens: 11...12)
        try waitUntilTrue(seconds: 30) { (try? self.subscribe(a).1) == self.rowLines(1...12) }
    }

    func testASidecarKilledAndRestartedResumesWithNoGapAndNoDuplicate() throws {
        let directory = redis.directory.appendingPathComponent("sidecar-b").path
        let a = try sidecar()
        var b = try sidecar(["--data-dir", directory, "--sync", "normal"])
        let writer = try connect(a, name: "pub")
        try publish(writer, tokens: 1...100)
        try waitUntilTrue { (try? self.subscribe(b).1.count) == 100 }
        let (worker, _) = try subscribe(b)
        try publish(writer, tokens: 101...150)
        XCTAssertEqual(try readRows(worker, 50), rowLines(101...150))
        b.kill()
        // B is gone while A goes on writing.
        try publish(writer, tokens: 151...300)
        b = try sidecar(["--data-dir", directory, "--sync", "normal"])
        let (resumed, caughtUp) = try subscribe(b, after: 150)
        let live = caughtUp.count < 150 ? try readRows(resumed, 150 - caughtUp.count) : []
        XCTAssertEqual(caughtUp + live, rowLines(151...300))
        try publish(writer, tokens: 301...310)
        XCTAssertEqual(try readRows(resumed, 10), rowLines(301...310))
    }

    func testRedisRestartedMidStreamLosesNothingAcknowledged() throws {
        let a = try sidecar()
        let b = try sidecar()
        let (worker, _) = try subscribe(b)
        let writer = try connect(a, name: "pub")
        try publish(writer, tokens: 1...100)
        redis.stop()
        try redis.start()
        // Both sidecars reconnect (back-off from 1 s); the writer's next rows wait for that, then go through.
        try publish(writer, tokens: 101...200)
        XCTAssertEqual(try readRows(worker, 200), rowLines(1...200))
        XCTAssertEqual(
            try redis.cli(["XREVRANGE", "replication-sidecar:{test.local}:events", "+", "-", "COUNT", "1"])
                .split(separator: "\n").first, "200-0")
    }

    func testAWriterIsRefusedWhenRedisStaysUnreachableAndNothingOfItsBatchIsKept() throws {
        let a = try sidecar(writeTimeout: "0.5")
        let writer = try connect(a, name: "pub")
        try publish(writer, tokens: 1...3)
        let (worker, _) = try subscribe(a)
        redis.stop()
        try writer.send("RDATA events batch \(eventRow(4))\nRDATA events 4 \(eventRow(5))\n")
        let refused = try writer.readLines { $0.hasPrefix("ERROR") }
        XCTAssertEqual(
            refused, ["ERROR rejected RDATA events 4: not stored: Redis unavailable: nothing of this batch was kept"])
        // Local workers keep being served what is stored; the refused batch never reaches them.
        let (_, caughtUp) = try subscribe(a)
        XCTAssertEqual(caughtUp, rowLines(1...3))
        XCTAssertEqual(try metric(a, #"refused_writes_total{reason="unavailable"}"#), 1)
        XCTAssertEqual(try metric(a, #"connected{role="commands"}"#), 0)
        // Not ready without Redis (new rows could not arrive), while still alive.
        XCTAssertEqual(try probe(a, "/readyz"), 503)
        XCTAssertEqual(try probe(a, "/healthz"), 200)
        try redis.start()
        // Once A has reconnected (its back-off decides when), the next writer's rows go through.
        try waitUntilTrue(seconds: 40) {
            guard let next = try? self.connect(a, name: "pub"),
                (try? next.send("RDATA events 4 \(eventRow(4))\n")) != nil
            else { return false }
            return (try? next.readLines { $0.hasPrefix("ERROR") || $0.hasPrefix("POSITION") }.last)
                == "POSITION events 4"
        }
        XCTAssertEqual(try readRows(worker, 1), rowLines(4...4))
        try waitUntilTrue { (try? self.probe(a, "/readyz")) == 200 }
    }

    func testRedisThatLostTheStreamsMakesTheSidecarRefuseWritesRatherThanGoBackwards() throws {
        let a = try sidecar()
        let writer = try connect(a, name: "pub")
        try publish(writer, tokens: 1...20)
        // Redis restarted without its data: the key is gone, A's log holds token 20.
        redis.stop()
        try FileManager.default.removeItem(at: redis.directory.appendingPathComponent("appendonlydir"))
        try redis.start()
        // The write waits for A to reconnect and compare (well within the 5 s write timeout), then is refused.
        let next = try connect(a, name: "pub")
        try next.send("RDATA events 21 \(eventRow(21))\n")
        let answer = try next.readLines { $0.hasPrefix("ERROR") || $0.hasPrefix("POSITION") }
        XCTAssertEqual(
            answer.last,
            "ERROR rejected RDATA events 21: not stored: Redis lost rows this sidecar stored (events): writes refused until an operator acts"
        )
        XCTAssertEqual(
            try redis.cli(["EXISTS", "replication-sidecar:{test.local}:events"]).trimmingCharacters(
                in: .whitespacesAndNewlines), "0")
    }

    private func entriesInRedis() throws -> [String] {
        try redis.cli(["XRANGE", "replication-sidecar:{test.local}:events", "-", "+"]).split(separator: "\n")
            .filter { $0.hasSuffix("-0") }.map(String.init)
    }

    func testRetainRowsTrimsTheStreamInRedis() throws {
        let a = try sidecar(["--retain-rows", "10"])
        let writer = try connect(a, name: "pub")
        try publishOneByOne(writer, tokens: 1...50)
        // Trimmed once a second (XTRIM MINID): the newest ten entries stay, and the one before them, which
        // shows that nothing after token 40 was trimmed.
        try waitUntilTrue(seconds: 30) { (try? self.entriesInRedis().count) == 11 }
        XCTAssertEqual(try entriesInRedis(), (40...50).map { "\($0)-0" })
        XCTAssertEqual(try metric(a, #"entries_trimmed_total{stream_name="events"}"#), 39)
        // What the sidecar keeps of its own is its log's business: a worker after 40 gets every row.
        XCTAssertEqual(try subscribe(a, after: 40).1, rowLines(41...50))
    }

    /// The rows of each entry in Redis, oldest first, counted from its `RDATA` lines.
    private func rowsPerEntry() throws -> [Int] {
        var rows: [Int] = []
        let lines = try redis.cli(["XRANGE", "replication-sidecar:{test.local}:events", "-", "+"])
        for line in lines.split(separator: "\n") {
            if line.hasSuffix("-0") {
                rows.append(0)
            } else if line.hasPrefix("RDATA events") {
                rows[rows.count - 1] += 1
            }
        }
        return rows
    }

    func testRetainRowsCountsTheRowsOfRunEntries() throws {
        let a = try sidecar(["--retain-rows", "100"])
        let writer = try connect(a, name: "pub")
        // 600 one-row batches sent at once: runs, fewer than 100 entries of up to 16 KiB.
        try publish(writer, tokens: 1...600)
        XCTAssertLessThan(try rowsPerEntry().count, 100)
        // Trimmed until the second entry left is the first not to go: the entries after it hold fewer than 100
        // rows, those from it on at least 100 (the first stays to show nothing after it was trimmed). On a slow
        // machine the runs are longer, and the newest entry alone may hold 100 rows: then two entries are left.
        var rows: [Int] = []
        let trimmed =
            (try? waitUntilTrue(seconds: 30) {
                rows = (try? self.rowsPerEntry()) ?? []
                return rows.count >= 2 && rows.dropFirst(2).reduce(0, +) < 100
            }) != nil
        XCTAssertTrue(trimmed, "not trimmed down to the entries that hold the newest 100 rows: \(rows)")
        XCTAssertGreaterThanOrEqual(rows.dropFirst().reduce(0, +), 100, "\(rows)")
        XCTAssertEqual(try subscribe(a, after: 500).1, rowLines(501...600))
    }

    func testTrimmingRunsTheLoadedScriptAndLoadsItAgainWhenRedisForgetsIt() throws {
        let a = try sidecar(["--retain-rows", "10"])
        let writer = try connect(a, name: "pub")
        try publishOneByOne(writer, tokens: 1...20)
        try waitUntilTrue(seconds: 30) { (try? self.entriesInRedis().count) == 11 }
        // With nothing written, every pass is an EVALSHA: the script is not sent again.
        let evals = try redis.calls("eval")
        let evalshas = try redis.calls("evalsha")
        try waitUntilTrue(seconds: 30) { (try? self.redis.calls("evalsha")) ?? 0 >= evalshas + 3 }
        XCTAssertEqual(try redis.calls("eval"), evals)
        // Redis forgets its scripts: they are loaded again, and trimming goes on.
        try redis.cli(["SCRIPT", "FLUSH"])
        try waitUntilTrue(seconds: 30) { (try? self.redis.calls("script|load")) ?? 0 >= 4 }
        try publishOneByOne(writer, tokens: 21...30)
        try waitUntilTrue(seconds: 30) { (try? self.entriesInRedis()) == (20...30).map { "\($0)-0" } }
    }

    func testRetainAgeKeepsEntriesYoungerThanItInRedis() throws {
        let a = try sidecar(["--retain-rows", "1", "--retain-age", "3s"])
        let writer = try connect(a, name: "pub")
        let start = Date()
        try publishOneByOne(writer, tokens: 1...20)
        // Once the sidecar has seen token 19 at least 3 s ago, the entries through it go but 19, which stays to
        // show nothing after it was trimmed; never sooner, which the rows bound alone would allow.
        try waitUntilTrue(seconds: 30) { (try? self.entriesInRedis().count) == 2 }
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 3)
        XCTAssertEqual(try entriesInRedis(), ["19-0", "20-0"])
    }

    /// Batch `token` of five rows, as a writer sends it, and as catch-up sends it back.
    private func fiveRows(_ token: Int) -> (sent: String, caughtUp: [String]) {
        let rows = (0..<5).map { eventRow(token * 10 + $0) }
        let sent = rows.enumerated().map { "RDATA events \($0 == 4 ? "\(token)" : "batch") \($1)\n" }.joined()
        return (sent, rows.map { "RDATA events \(token) \($0)" })
    }

    /// `REPLICATE events <token>` answered with `ERROR … has fallen behind`.
    private func assertFallenBehind(_ sidecar: SidecarProcess, after token: Int) throws {
        let socket = try connect(sidecar, name: "worker")
        try socket.send("REPLICATE events \(token)\n")
        let answer = try socket.readLines { $0.hasPrefix("ERROR") || $0.hasPrefix("POSITION") || $0.hasPrefix("RDATA") }
        XCTAssertTrue(
            answer.last?.hasPrefix("ERROR") == true && answer.last!.contains("has fallen behind"), "\(answer)")
    }

    func testACatchUpOlderThanTheLocalLogIsReadFromRedis() throws {
        // Batches of five rows: ten rows are two batches in a log, while Redis keeps them and the batch before,
        // which shows nothing after it was trimmed.
        let a = try sidecar(["--retain-rows", "10"])
        let b = try sidecar(["--retain-rows", "10"])
        let writer = try connect(a, name: "pub")
        for token in 1...30 {
            try writer.send(fiveRows(token).sent)
            XCTAssertEqual(try writer.readLine(), "POSITION events \(token)")
        }
        try waitUntilTrue(seconds: 30) { (try? self.entriesInRedis().count) == 3 }
        try waitUntilTrue(seconds: 30) { (try? self.subscribe(b, after: 29).1.count) == 5 }
        // B's log holds 29 and 30 only: 28 comes from Redis (XRANGE), then the log takes over. The script
        // that reads it is run by SHA-1, not sent whole.
        let evals = try redis.calls("eval")
        XCTAssertEqual(try subscribe(b, after: 27).1, (28...30).flatMap { fiveRows($0).caughtUp })
        XCTAssertEqual(try redis.calls("eval"), evals)
        // Redis forgets its scripts: the catch-up is sent whole (unless a trim had them loaded again first),
        // and they are loaded again. Counted from before the flush, so a reload by a trim counts whenever it
        // happens.
        let loads = try redis.calls("script|load")
        try redis.cli(["SCRIPT", "FLUSH"])
        XCTAssertEqual(try subscribe(b, after: 27).1, (28...30).flatMap { fiveRows($0).caughtUp })
        try waitUntilTrue(seconds: 30) { (try? self.redis.calls("script|load")) ?? 0 >= loads + 3 }
        // Redis holds nothing before 28 either: fallen behind, never a gap.
        try assertFallenBehind(b, after: 26)
        XCTAssertEqual(try metric(b, #"backfills_total{result="ok"}"#), 2)
        XCTAssertEqual(try metric(b, #"backfills_total{result="fallen_behind"}"#), 1)

        // A sidecar started now finds entries trimmed before its first: it stores what Redis has from 28 on,
        // and serves nothing older.
        let c = try sidecar(["--retain-rows", "10"])
        try waitUntilTrue(seconds: 30) { (try? self.subscribe(c, after: 29).1.count) == 5 }
        XCTAssertEqual(try subscribe(c, after: 27).1, (28...30).flatMap { fiveRows($0).caughtUp })
        try assertFallenBehind(c, after: 26)
        try assertFallenBehind(c, after: 0)
    }

    func testAFollowerBehindByMoreThanTheRetentionServesNoGap() throws {
        // B's own log would keep every row: only what B stores can make a gap there.
        let a = try sidecar(["--retain-rows", "10"])
        let b = try sidecar(["--retain-rows", "1000"])
        let writer = try connect(a, name: "pub")
        try publishOneByOne(writer, tokens: 1...5)
        try waitUntilTrue(seconds: 30) { (try? self.subscribe(b, after: 4).1.count) == 1 }
        // B stands still (its follower's connection open, an XREAD waiting) while A writes and trims.
        let pid = b.process.processIdentifier
        kill(pid, SIGSTOP)
        var stopped = true
        defer { if stopped { kill(pid, SIGCONT) } }
        try publishOneByOne(writer, tokens: 6...50)
        try waitUntilTrue(seconds: 30) { (try? self.entriesInRedis().count) == 11 }
        kill(pid, SIGCONT)
        stopped = false
        try waitUntilTrue(seconds: 30) { (try? self.subscribe(b, after: 49).1.count) == 1 }
        // B read 6 before the trimming, then 40 on: a worker from before 40 is told it has fallen behind
        // rather than handed 6, then 40.
        XCTAssertEqual(try subscribe(b, after: 39).1, rowLines(40...50))
        try assertFallenBehind(b, after: 5)
    }

    func testWithWaitReplicasAWriterIsAcknowledgedOnlyOnceAReplicaHasTheBatch() throws {
        let replica = try RedisServer(replicaOf: redis.port)
        try waitUntilTrue { (try? replica.cli(["INFO", "replication"]))?.contains("master_link_status:up") == true }
        let a = try sidecar(["--redis-wait-replicas", "1"], writeTimeout: "1")
        let writer = try connect(a, name: "pub")
        try publish(writer, tokens: 1...5)
        XCTAssertEqual(
            try replica.cli(["XREVRANGE", "replication-sidecar:{test.local}:events", "+", "-", "COUNT", "1"])
                .split(separator: "\n").first, "5-0")
        // Without the replica, the writer is told its batch is not replicated (and that it may still arrive).
        replica.stop()
        try writer.send("RDATA events 6 \(eventRow(6))\n")
        let refused = try writer.readLines { $0.hasPrefix("ERROR") || $0.hasPrefix("POSITION") }
        XCTAssertEqual(
            refused.last,
            "ERROR rejected RDATA events 6: not stored: Redis has the batch but 0 of 1 replicas confirmed it in time; "
                + "it may still be delivered")
        XCTAssertEqual(try metric(a, #"refused_writes_total{reason="not_replicated"}"#), 1)
    }
}
