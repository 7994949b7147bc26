import Dispatch
import Synchronization
import NIOCore
import NIOPosix
import ReplicationCore
import ReplicationNIO
import ReplicationTestSupport
import StreamLog
import Testing

/// Real sockets on 127.0.0.1 against a real server; each test starts and stops its own.
@Suite(.serialized) struct LoopbackServerTests {
    let writerConfiguration = ServerConfiguration(serverName: "test.local", writers: ["pub"])

    func ev(_ index: Int) -> String { eventRow(index) }

    /// Publishes rows as the writer `pub`, one token each from `firstToken`, reading the acks as it goes.
    func publish(_ writer: LineSocket, rows: Range<Int>, chunk: Int = 500) throws {
        var next = rows.lowerBound
        while next < rows.upperBound {
            let end = min(next + chunk, rows.upperBound)
            try writer.send((next..<end).map { "RDATA events \($0) \(ev($0))\n" }.joined())
            let acks = try writer.readLines(end - next)
            guard acks.last == "POSITION events \(end - 1)" else { throw SocketError("unexpected acks \(acks.suffix(2))") }
            next = end
        }
    }

    @Test func writerRowsReachSubscribersFromAPastTokenAndFromNow() async throws {
        let fixture = try await ServerFixture.start(writerConfiguration)
        let writer = try fixture.connect(name: "pub")
        try writer.send("RDATA events batch \(ev(1))\nRDATA events 1 \(ev(2))\nRDATA events 2 \(ev(3))\n")
        #expect(try writer.readLines(2) == ["POSITION events 1", "POSITION events 2"])

        let fromPast = try fixture.connect(name: "past")
        try fromPast.send("REPLICATE events 1\n")
        #expect(try fromPast.readLines(2) == ["RDATA events 2 \(ev(3))", "POSITION events 2"])
        let fromNow = try fixture.connect(name: "now")
        try fromNow.send("REPLICATE events NOW\n")
        #expect(try fromNow.readLines(1) == ["POSITION events 2"])

        try writer.send("RDATA events batch \(ev(4))\nRDATA events batch \(ev(5))\nRDATA events 3 \(ev(6))\n")
        #expect(try writer.readLines(1) == ["POSITION events 3"])
        let live = ["RDATA events batch \(ev(4))", "RDATA events batch \(ev(5))", "RDATA events 3 \(ev(6))"]
        #expect(try fromPast.readLines(3) == live)
        #expect(try fromNow.readLines(3) == live)

        // Catch-up never batches: every row carries its own token.
        let fromStart = try fixture.connect(name: "start")
        try fromStart.send("REPLICATE events 0\n")
        #expect(
            try fromStart.readLines(7) == [
                "RDATA events 1 \(ev(1))", "RDATA events 1 \(ev(2))", "RDATA events 2 \(ev(3))",
                "RDATA events 3 \(ev(4))", "RDATA events 3 \(ev(5))", "RDATA events 3 \(ev(6))", "POSITION events 3",
            ])
        try await fixture.stop()
    }

    @Test func clientCommandsHaveTheirEffects() async throws {
        let fixture = try await ServerFixture.start(writerConfiguration)
        let worker = try fixture.connect(name: "worker")
        try worker.send("REPLICATE caches NOW\nREPLICATE pushers NOW\n")
        #expect(try worker.readLines(2) == ["POSITION caches 0", "POSITION pushers 0"])
        try worker.send(
            """
            USER_SYNC @bob:test.local start 1\nFEDERATION_ACK 17\nUSER_IP @a:t ["tok", "1.2.3.4", "ua", null, 5]
            INVALIDATE_CACHE get_user_by_id ["@alice:test.local"]\nREMOVE_PUSHER m.http key1 @alice:test.local\n
            """)
        let lines = try worker.readLines(2)
        #expect(lines[0].hasPrefix(#"RDATA caches 1 ["get_user_by_id", ["@alice:test.local"], "#))
        #expect(lines[1] == #"RDATA pushers 1 ["@alice:test.local", "m.http", "key1", true]"#)
        let counters = fixture.server.hub.countersSnapshot
        #expect(counters.userSync == 1 && counters.federationAck == 1 && counters.userIP == 1)
        #expect(counters.invalidateCache == 1 && counters.removePusher == 1 && counters.lastFederationAck == 17)
        let worker2 = try await fixture.snapshots().first { $0.name == "worker" }
        #expect(worker2?.syncingUsers == 1)
        #expect(worker2?.counters.inbound(.USER_SYNC) == 1)
        try await fixture.stop()
    }

    @Test func anErrorClosesOnlyItsOwnConnectionAndLeavesNothingOfABatch() async throws {
        let fixture = try await ServerFixture.start(writerConfiguration)
        let subscriber = try fixture.connect(name: "sub")
        try subscriber.send("REPLICATE events NOW\n")
        #expect(try subscriber.readLine() == "POSITION events 0")

        let bad = try fixture.connect(name: "bad")
        try bad.send("FOO bar\nPING 1\n")
        #expect(try bad.readLines(until: { $0.hasPrefix("ERROR") }) == ["ERROR invalid command: FOO"])
        #expect(try bad.readsEndOfStream())

        let writer = try fixture.connect(name: "pub")
        try writer.send("RDATA events 1 \(ev(1))\n")
        #expect(try writer.readLine() == "POSITION events 1")
        try writer.send("RDATA events batch \(ev(2))\nRDATA events 2 [\"too\", \"many\", \"fields\"]\n")
        #expect(
            try writer.readLine()
                == "ERROR rejected RDATA events 2: a events row is a JSON array of 2 fields (got 3)")
        #expect(try writer.readsEndOfStream())

        let writer2 = try fixture.connect(name: "pub")
        try writer2.send("RDATA events 1 \(ev(9))\n")
        #expect(
            try writer2.readLine()
                == "ERROR rejected RDATA events 1: token must be greater than the stream's current token 1, or repeat "
                + "what is stored: row 1 of 1 at token 1 differs from the stored row at byte 11")

        let nonWriter = try fixture.connect(name: "sub2")
        try nonWriter.send("RDATA events 5 \(ev(5))\n")
        #expect(try nonWriter.readLine() == "ERROR invalid command: RDATA")

        // The subscriber saw the one accepted row, and is still served.
        #expect(try subscriber.readLine() == "RDATA events 1 \(ev(1))")
        #expect(fixture.log.currentToken(of: .events) == 1)
        let writer3 = try fixture.connect(name: "pub")
        try writer3.send("RDATA events 2 \(ev(2))\n")
        #expect(try subscriber.readLine() == "RDATA events 2 \(ev(2))")
        try await fixture.stop()
    }

    @Test func replicateErrors() async throws {
        let fixture = try await ServerFixture.start(
            writerConfiguration, log: InMemoryStreamLog(retainRows: 2))
        let unknown = try fixture.connect(name: "w")
        try unknown.send("REPLICATE nosuch 0\n")
        #expect(try unknown.readLine() == "ERROR failed to handle replicate: Exception('unknown stream %s', 'nosuch')")

        let writer = try fixture.connect(name: "pub")
        try publish(writer, rows: 1..<6)
        let behind = try fixture.connect(name: "w")
        try behind.send("REPLICATE events 1\n")
        #expect(try behind.readLine() == "ERROR failed to handle replicate: Exception('stream events has fallen behind')")
        let retained = try fixture.connect(name: "w")
        try retained.send("REPLICATE events 3\n")
        #expect(try retained.readLines(3) == ["RDATA events 4 \(ev(4))", "RDATA events 5 \(ev(5))", "POSITION events 5"])
        let ahead = try fixture.connect(name: "w")
        try ahead.send("REPLICATE events 12345678901234567890123\n")
        #expect(try ahead.readLine() == "POSITION events 5")
        try await fixture.stop()
    }

    @Test func aFiftyThousandRowCatchUpCompletesWithLiveRowsArrivingDuringIt() async throws {
        let fixture = try await ServerFixture.start(writerConfiguration)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let appended = (1...50_000).map { token in
            fixture.server.hub.append([ev(token)], to: .events, token: .exactly(Int64(token)), on: loop)
        }
        _ = try await appended.last!.get()
        let writer = try fixture.connect(name: "pub")

        let reader = try fixture.connect(name: "reader")
        try reader.send("REPLICATE events 0\n")
        var lines = try reader.readLines(1_000)
        try publish(writer, rows: 50_001..<50_101)
        lines += try reader.readLines(50_100 - 1_000 + 1)

        let positions = lines.enumerated().filter { $0.element.hasPrefix("POSITION") }
        #expect(positions.count == 1)
        let tokens = lines.filter { $0.hasPrefix("RDATA") }.map { Int($0.split(separator: " ")[2])! }
        #expect(tokens == Array(1...50_100))
        if let position = positions.first {
            let positionToken = Int(position.element.split(separator: " ")[2])!
            // Rows after the POSITION are exactly the ones after its token.
            #expect(lines.count - position.offset - 1 == 50_100 - positionToken)
        }
        try await fixture.stop()
    }

    @Test func aSubscriberThatStopsReadingCostsNoMemoryAndDoesNotSlowOthers() async throws {
        // No keepalive PING may join the rows (or the slow connection's queue) however long a sanitizer
        // build takes to move 30,000 rows.
        var configuration = writerConfiguration
        configuration.protocolLimits.pingIntervalMillis = 600_000
        configuration.protocolLimits.pingTimeoutMillis = 3_000_000
        let fixture = try await ServerFixture.start(configuration)
        let slow = try fixture.connect(name: "slow", receiveBuffer: 4096)
        try slow.send("REPLICATE events NOW\n")
        #expect(try slow.readLine() == "POSITION events 0")
        let fast = try fixture.connect(name: "fast")
        try fast.send("REPLICATE events NOW\n")
        #expect(try fast.readLine() == "POSITION events 0")

        let rows = 30_000  // about 5 MB: far more than any socket buffer holds
        let fastResult = Mutex<Result<[String], any Error>?>(nil)
        let fastDone = DispatchGroup()
        fastDone.enter()
        DispatchQueue.global().async {
            fastResult.withLock { $0 = Result { try fast.readLines(rows) } }
            fastDone.leave()
        }
        let writer = try fixture.connect(name: "pub")
        try publish(writer, rows: 1..<(rows + 1))
        #expect(fastDone.wait(timeout: .now() + 60) == .success)
        let fastLines = try #require(fastResult.withLock { $0 }).get()
        #expect(fastLines.map { Int($0.split(separator: " ")[2])! } == Array(1...rows))

        // The slow subscriber holds at most a page beyond the write-buffer mark in user space, whatever is published.
        let slowSnapshot = try #require(try await fixture.snapshots().first { $0.name == "slow" })
        let bound = configuration.writeBufferHighWater + configuration.catchUpPageBytes
        #expect(slowSnapshot.bufferedWritableBytes > 0)
        #expect(slowSnapshot.bufferedWritableBytes <= bound)
        #expect(slowSnapshot.pendingCommands == 0)
        #expect(slowSnapshot.sentTokens[StreamName.events.index]! < Int64(rows))

        // When it reads again it gets every row, in order, with no gap.
        let slowLines = try slow.readLines(rows)
        #expect(slowLines.map { Int($0.split(separator: " ")[2])! } == Array(1...rows))
        try await fixture.stop()
    }

    @Test func tooManyQueuedCommandsFailToKeepUp() async throws {
        var configuration = writerConfiguration
        configuration.socketSendBuffer = 8192  // so that the kernel does not absorb megabytes first
        let fixture = try await ServerFixture.start(configuration)
        // Small next to the 1.1 MB of answers, but not so small that loopback TCP crawls once it reads.
        let flooder = try fixture.connect(name: "flooder", receiveBuffer: 65_536)
        let requests = 60_000
        // Each REPLICATE NOW is answered with a POSITION; the client reads none of them.
        try flooder.send(String(repeating: "REPLICATE caches NOW\n", count: requests))
        // The connection leaves the server's registry when it gives up on it; only then do we read.
        try await waitUntil(seconds: 60) { (try? await fixture.snapshots().contains { $0.name == "flooder" }) == false }
        let lines = try flooder.readLines(until: { $0.hasPrefix("ERROR") })
        #expect(lines.last == "ERROR Failed to keep up")
        #expect(lines.dropLast().allSatisfy { $0 == "POSITION caches 0" })
        #expect(lines.count < requests)
        #expect(try flooder.readsEndOfStream())
        flooder.close()
        try await waitUntil { fixture.server.hub.countersSnapshot.closeReasons[.failedToKeepUp] == 1 }
        try await fixture.stop()
    }

    @Test func aConnectionThatIgnoresItsTimeoutErrorIsAborted() async throws {
        var configuration = writerConfiguration
        configuration.protocolLimits.pingIntervalMillis = 50
        configuration.protocolLimits.pingTimeoutMillis = 200
        let fixture = try await ServerFixture.start(configuration)
        let silent = try fixture.connect(name: "silent")
        try silent.send("PING 1\n")
        let lines = try silent.readLines(until: { $0.hasPrefix("ERROR") })
        #expect(lines.last == "ERROR ping timeout")
        // We never close our side: the server gives up after the grace period.
        try await waitUntil { fixture.server.hub.countersSnapshot.closeReasons[.connectionAborted] == 1 }
        #expect(try silent.readsEndOfStream())
        try await fixture.stop()
    }

    @Test func shutdownDeliversTheErrorToEveryConnection() async throws {
        var configuration = writerConfiguration
        configuration.shutdownGrace = .seconds(10)
        let fixture = try await ServerFixture.start(configuration)
        let first = try fixture.connect(name: "one")
        let second = try fixture.connect(name: "two")
        try first.send("REPLICATE ALL NOW\n")
        #expect(try first.readLines(StreamName.all.count).count == StreamName.all.count)
        // Wait until both connections are named, then stop the server.
        try await waitUntil { (try? await fixture.snapshots().filter { $0.name != "anon" }.count) == 2 }
        let stopped = Task { try await fixture.stop() }
        for client in [first, second] {
            #expect(try client.readLines(until: { $0.hasPrefix("ERROR") }).last == "ERROR server shutting down")
            #expect(try client.readsEndOfStream())
            client.close()
        }
        try await stopped.value
        #expect(fixture.server.hub.countersSnapshot.closeReasons == [.serverShutdown: 2])
    }
}
