import Foundation
import NIOPosix
import ReplicationCore
import ReplicationNIO
import ReplicationTestSupport
import StreamLog
import Testing

@Suite(.serialized) struct DurableLogTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("durable-\(UUID().uuidString)").path
    let configuration = ServerConfiguration(serverName: "test.local", writers: ["pub"])

    func openLog() throws -> SQLiteStreamLog {
        try SQLiteStreamLog(directory: directory, sync: .full, clock: { ConnectionClock.system.wallMillis })
    }

    @Test func aRestartedServerServesEveryRowFromAnOldToken() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try await ServerFixture.start(configuration, log: try openLog())
        let writer = try first.connect(name: "pub")
        var published: [String] = []
        for token in 1...400 {
            // Every fourth token is a batch of two rows.
            if token % 4 == 0 {
                try writer.send("RDATA events batch \(eventRow(token * 10))\n")
                published.append("RDATA events \(token) \(eventRow(token * 10))")
            }
            try writer.send("RDATA events \(token) \(eventRow(token))\n")
            published.append("RDATA events \(token) \(eventRow(token))")
        }
        #expect(try writer.readLines(400).last == "POSITION events 400")
        try await first.stop()

        let second = try await ServerFixture.start(configuration, log: try openLog())
        #expect(second.log.currentToken(of: .events) == 400)
        let worker = try second.connect(name: "worker")
        try worker.send("REPLICATE events 150\n")
        let expected = published.filter { Int($0.split(separator: " ")[2])! > 150 } + ["POSITION events 400"]
        #expect(try worker.readLines(expected.count) == expected)
        try await second.stop()
    }

    @Test func afterKillNineEveryAcknowledgedRowIsThereAndNoUnfinishedBatch() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sidecar = try SidecarProcess(serve: ["--writer", "pub", "--data-dir", directory])
        let writer = try LineSocket(port: sidecar.port)
        _ = try writer.readLines(2)
        try writer.send("NAME pub\n")
        // Batches of three rows; read acknowledgements as they come.
        var acknowledged: Int64 = 0
        for token in 1...300 {
            try writer.send(
                (0..<2).map { "RDATA caches batch [\"f\", [\"\(token)-\($0)\"], 1]\n" }.joined()
                    + "RDATA caches \(token) [\"f\", [\"\(token)-2\"], 1]\n")
            if token % 50 == 0 {
                while acknowledged < Int64(token) - 10 {
                    let ack = try #require(try writer.readLine())
                    acknowledged = Int64(ack.split(separator: " ")[2])!
                }
            }
        }
        while acknowledged < 300 {
            acknowledged = Int64(try #require(try writer.readLine()).split(separator: " ")[2])!
        }
        // An unfinished batch, then more rows in flight, then SIGKILL.
        try writer.send("RDATA caches batch [\"f\", [\"unfinished\"], 1]\n")
        sidecar.kill()

        let restarted = try SidecarProcess(serve: ["--writer", "pub", "--data-dir", directory])
        defer { #expect(restarted.terminate() == 0) }
        let reader = try LineSocket(port: restarted.port)
        _ = try reader.readLines(2)
        try reader.send("NAME reader\nREPLICATE caches 0\n")
        let lines = try reader.readLines(until: { $0.hasPrefix("POSITION") })
        #expect(lines.last == "POSITION caches 300")
        #expect(lines.count == 300 * 3 + 1)
        #expect(!lines.contains { $0.contains("unfinished") })
        for token in 1...300 {
            for part in 0..<3 {
                #expect(lines[(token - 1) * 3 + part] == "RDATA caches \(token) [\"f\", [\"\(token)-\(part)\"], 1]")
            }
        }
    }

    @Test func sigtermExitsZeroAfterTellingWorkersAndLeavesTheLogAsOneFile() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sidecar = try SidecarProcess(serve: ["--writer", "pub", "--data-dir", directory])
        let writer = try LineSocket(port: sidecar.port)
        _ = try writer.readLines(2)
        try writer.send("NAME pub\n" + (1...20).map { "RDATA typing \($0) [\"!r\", [\"@u\"]]\n" }.joined())
        #expect(try writer.readLines(20).last == "POSITION typing 20")
        let worker = try LineSocket(port: sidecar.port)
        _ = try worker.readLines(2)
        try worker.send("NAME worker\nREPLICATE events NOW\n")
        #expect(try worker.readLine() == "POSITION events 0")
        #expect(FileManager.default.fileExists(atPath: directory + "/stream-log.sqlite3-wal"))
        let stopping = Thread { _ = sidecar.terminate() }
        stopping.start()
        #expect(try worker.readLine() == "ERROR server shutting down")
        #expect(try worker.readsEndOfStream())
        worker.close()
        #expect(try writer.readLine() == "ERROR server shutting down")
        writer.close()
        try waitUntilTrue { !sidecar.process.isRunning }
        #expect(sidecar.process.terminationStatus == 0)
        // The WAL was checkpointed into the database on the way out.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["stream-log.sqlite3"])
    }

    /// The readiness line is where a supervisor or test may stop the server at once: the signals are trapped
    /// before it is written, so a SIGTERM straight after it is a graceful shutdown, never the signal's default
    /// action killing the process. Repeated, because the window it used to fall into was a few milliseconds.
    @Test func sigtermStraightAfterTheReadinessLineExitsZero() throws {
        for _ in 1...20 {
            let sidecar = try SidecarProcess(serve: ["--in-memory"])
            #expect(sidecar.terminate() == 0)
            #expect(sidecar.process.terminationReason == .exit)
        }
    }

    /// `admin show` and `admin set-head` on a data directory written by the real server: a stream a writer
    /// moved far ahead is moved back once the server is stopped (never while it runs), and the restarted
    /// server serves the rows up to the new head and takes the writer's next token after it.
    @Test func adminShowsEveryHeadAndMovesOneBackOnlyWithTheServerStopped() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let admin = { (arguments: [String]) in
            try runProcess(sidecarExecutable.path, ["admin", "--data-dir", self.directory] + arguments)
        }
        /// The `show` line of a stream, split into its columns.
        let shown = { (stream: String) -> [Substring] in
            let output = try admin(["show"])
            #expect(output.status == 0, "\(output.errors)")
            let line = output.output.split(separator: "\n").first { $0.hasPrefix(stream + " ") } ?? ""
            return line.split(separator: " ")
        }
        let sidecar = try SidecarProcess(serve: ["--writer", "pub", "--data-dir", directory])
        let writer = try LineSocket(port: sidecar.port)
        _ = try writer.readLines(2, timeoutMillis: 30_000)
        // One read, so one chunk: set-head has to cut it between its rows.
        try writer.send(
            "NAME pub\nRDATA events batch \(eventRow(1))\nRDATA events 1 \(eventRow(2))\nRDATA events 2 \(eventRow(3))\n"
                + "RDATA events 3 \(eventRow(4))\nRDATA events 1000000000000 \(eventRow(5))\n"
                + "RDATA typing 7 [\"!r\", [\"@u\"]]\n")
        #expect(try writer.readLines(5, timeoutMillis: 30_000).last == "POSITION typing 7")
        #expect(try shown("events") == ["events", "1000000000000", "0", "5"])
        #expect(try shown("typing") == ["typing", "7", "0", "1"])
        #expect(try shown("caches") == ["caches", "0", "0", "0"])

        let whileRunning = try admin(["set-head", "events", "2"])
        #expect(whileRunning.status == 1)
        #expect(
            whileRunning.errors.contains("is in use (a running server, or `check`): stop the server"),
            "\(whileRunning.errors)")
        #expect(try shown("events") == ["events", "1000000000000", "0", "5"])
        writer.close()
        #expect(sidecar.terminate() == 0)

        let moved = try admin(["set-head", "events", "2"])
        #expect(moved.status == 0, "\(moved.errors)")
        #expect(moved.output == "stream events: head moved from 1000000000000 to 2, 2 rows removed\n")
        #expect(try shown("events") == ["events", "2", "0", "3"])
        #expect(try shown("typing") == ["typing", "7", "0", "1"])
        let forward = try admin(["set-head", "events", "5"])
        #expect(forward.status == 1)
        #expect(forward.errors.contains("stream events is at 2: set-head only moves a head back, to 2 or less"))
        let unknown = try admin(["set-head", "nosuch", "1"])
        #expect(unknown.status != 0)
        #expect(unknown.errors.contains("unknown stream 'nosuch'"))
        let check = try runProcess(sidecarExecutable.path, ["check", "--data-dir", directory])
        #expect(check.output == "the stream log in \(directory) is sound: 2 streams, 4 rows\n")

        let restarted = try SidecarProcess(serve: ["--writer", "pub", "--data-dir", directory])
        defer { #expect(restarted.terminate() == 0) }
        let worker = try LineSocket(port: restarted.port)
        _ = try worker.readLines(2, timeoutMillis: 30_000)
        try worker.send("NAME worker\nREPLICATE events 0\n")
        #expect(
            try worker.readLines(4, timeoutMillis: 30_000) == [
                "RDATA events 1 \(eventRow(1))", "RDATA events 1 \(eventRow(2))", "RDATA events 2 \(eventRow(3))",
                "POSITION events 2",
            ])
        let next = try LineSocket(port: restarted.port)
        _ = try next.readLines(2, timeoutMillis: 30_000)
        try next.send("NAME pub\nRDATA events 3 \(eventRow(6))\n")
        #expect(try next.readLine(timeoutMillis: 30_000) == "POSITION events 3")
        #expect(try worker.readLine(timeoutMillis: 30_000) == "RDATA events 3 \(eventRow(6))")
    }

    @Test func checkFindsADamagedLogAndSaysWhatIsDamaged() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let check = { try runProcess(sidecarExecutable.path, ["check", "--data-dir", self.directory]) }
        let missing = try check()
        #expect(missing.status == 1 && missing.output.contains("there is no stream log at \(directory)/stream-log.sqlite3"))

        let log = try openLog()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let batches = (1...400).map { token in
            NewBatch(stream: .typing, rows: ["[\"!room\", [\"@user-\(token):test.local\"]]"], token: .exactly(Int64(token)))
        }
        #expect(try await log.append(batches, on: loop).get().allSatisfy { (try? $0.get()) != nil })
        await log.close()
        let sound = try check()
        #expect(sound.status == 0)
        #expect(sound.output == "the stream log in \(directory) is sound: 1 streams, 400 rows\n")

        // A row that is valid SQL but not a row of its stream.
        let file = directory + "/stream-log.sqlite3"
        let narrow = try runProcess(
            "/usr/bin/python3",
            [
                "-c",
                """
                import sqlite3
                c = sqlite3.connect('\(file)')
                row = b'RDATA typing 7 ["!room", ["@user-7:test.local"]]'
                c.execute("UPDATE chunks SET lines = replace(lines, ?, ?)", (row, b'RDATA typing 7 [1]'))
                c.commit()
                """,
            ])
        #expect(narrow.status == 0)
        let badRow = try check()
        #expect(badRow.status == 1)
        #expect(badRow.output.hasPrefix("stream typing: row 7/0 is not a JSON array of 2 fields\n"))

        // 8 KiB of garbage in the middle of the file: pages SQLite can no longer read.
        let handle = try #require(FileHandle(forUpdatingAtPath: file))
        try handle.seek(toOffset: 8192)
        handle.write(Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }))
        try handle.close()
        let damaged = try check()
        #expect(damaged.status == 1)
        #expect(damaged.output.contains("damaged"))
        #expect(damaged.output.hasSuffix("the stream log in \(directory) is damaged: see README, 'A damaged stream log'\n"))
    }

    @Test func aCatchUpThatHitsADamagedPageIsAnErrorCountedAsAStorageReadError() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try openLog()
        let batches = (1...4_000).map { token in
            NewBatch(stream: .events, rows: [eventRow(token)], token: .exactly(Int64(token)))
        }
        #expect(try await log.append(batches, on: MultiThreadedEventLoopGroup.singleton.next()).get().count == 4_000)
        await log.close()
        // Garbage over the second half of the file, where the rows are; the stream heads stay readable.
        let file = directory + "/stream-log.sqlite3"
        let size = try #require(FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
        let handle = try #require(FileHandle(forUpdatingAtPath: file))
        try handle.seek(toOffset: UInt64(size / 2))
        handle.write(Data((0..<(size / 2)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }))
        try handle.close()

        let fixture = try await ServerFixture.start(configuration, log: try openLog())
        let worker = try fixture.connect(name: "worker")
        try worker.send("REPLICATE events 0\n")
        let lines = try worker.readLines(until: { $0.hasPrefix("ERROR") }, timeoutMillis: 30_000)
        #expect(lines.last?.hasPrefix("ERROR failed to handle replicate") == true)
        #expect(lines.count < 4_000)
        #expect(fixture.server.hub.countersSnapshot.storageReadErrors == 1)
        try await fixture.stop()
    }

    @Test func badFlagsAndBadGroundExitNonZeroWithAMessage() throws {
        let executable = sidecarExecutable.path
        let badPort = try runProcess(executable, ["serve", "--port", "70000"])
        #expect(badPort.status != 0 && badPort.errors.contains("--port must be between 0 and 65535"))
        let badSync = try runProcess(executable, ["serve", "--sync", "sometimes"])
        #expect(badSync.status != 0 && badSync.errors.contains("--sync must be 'full' or 'normal'"))
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("plain-\(UUID().uuidString)").path
        _ = FileManager.default.createFile(atPath: file, contents: Data("x".utf8))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let badDirectory = try runProcess(executable, ["serve", "--port", "0", "--metrics-port", "0", "--data-dir", file])
        #expect(badDirectory.status != 0 && badDirectory.errors.contains("data directory \(file): it is not a directory"))
        let relayWithoutName = try runProcess(executable, ["serve", "--upstream", "127.0.0.1:9092"])
        #expect(relayWithoutName.status != 0 && relayWithoutName.errors.contains("--upstream needs --upstream-server-name"))
        let relayWithWriter = try runProcess(
            executable, ["serve", "--upstream", "127.0.0.1:9092", "--upstream-server-name", "hub", "--writer", "pub"])
        #expect(relayWithWriter.status != 0 && relayWithWriter.errors.contains("--writer cannot be used with --upstream"))
        let badUpstream = try runProcess(executable, ["serve", "--upstream", "hub-without-port"])
        #expect(badUpstream.status != 0 && badUpstream.errors.contains("--upstream"))
        let badMaxAge = try runProcess(executable, ["serve", "--metrics-max-age", "61"])
        #expect(badMaxAge.status != 0 && badMaxAge.errors.contains("--metrics-max-age must be between 0 and 60"))
    }
}
