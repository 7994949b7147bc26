import ReplicationCore
import ReplicationNIO
import ReplicationTestSupport
import Testing

/// Each way a connection ends, on real sockets, is counted under its own reason.
@Suite(.serialized) struct CloseReasonTests {
    let writerConfiguration = ServerConfiguration(serverName: "test.local", writers: ["pub"])

    func reasons(_ fixture: ServerFixture) -> [CloseReason: Int] { fixture.server.hub.countersSnapshot.closeReasons }

    /// Waits until exactly these reasons have been counted.
    func expectReasons(_ fixture: ServerFixture, _ expected: [CloseReason: Int]) async throws {
        do {
            try await waitUntil { reasons(fixture) == expected }
        } catch {
            Issue.record("close reasons \(reasons(fixture)), expected \(expected)")
        }
    }

    /// A subscriber that does not read, with rows waiting in the server's buffers for it.
    func stalledSubscriber(_ fixture: ServerFixture, rows: Int) throws -> LineSocket {
        let writer = try fixture.connect(name: "pub")
        let rowLines = (1...rows).map { "RDATA events \($0) \(eventRow($0))\n" }.joined()
        try writer.send(rowLines)
        _ = try writer.readLines(until: { $0 == "POSITION events \(rows)" })
        let stalled = try fixture.connect(name: "stalled", receiveBuffer: 4_096)
        try stalled.send("REPLICATE events 0\n")
        writer.close()
        return stalled
    }

    @Test func aCleanCloseIsConnectionDone() async throws {
        let fixture = try await ServerFixture.start()
        let worker = try fixture.connect(name: "w")
        try worker.send("REPLICATE events NOW\n")
        #expect(try worker.readLine() == "POSITION events 0")
        worker.close()
        try await expectReasons(fixture, [.connectionDone: 1])
        try await fixture.stop()
    }

    @Test func aResetIsConnectionLostIdleBeforeNameAndWithRowsInFlight() async throws {
        let fixture = try await ServerFixture.start(writerConfiguration)
        let idle = try fixture.connect(name: "idle")
        try idle.send("REPLICATE typing NOW\n")
        #expect(try idle.readLine() == "POSITION typing 0")
        idle.reset()
        try await expectReasons(fixture, [.connectionLost: 1])

        let unnamed = try LineSocket(port: fixture.port)
        _ = try unnamed.readLines(2)
        unnamed.reset()
        try await expectReasons(fixture, [.connectionLost: 2])

        // Resets straight after connecting, some with a line sent, none reading the greeting.
        for index in 0..<30 {
            let hasty = try LineSocket(port: fixture.port)
            if index % 2 == 0 { try hasty.send("NAME hasty\nREPLICATE events NOW\n") }
            hasty.reset()
        }
        try await expectReasons(fixture, [.connectionLost: 32])

        // The writer closes cleanly; the subscriber resets with megabytes still queued for it.
        let stalled = try stalledSubscriber(fixture, rows: 20_000)
        try await expectReasons(fixture, [.connectionLost: 32, .connectionDone: 1])
        stalled.reset()
        try await expectReasons(fixture, [.connectionLost: 33, .connectionDone: 1])
        try await fixture.stop()
    }

    @Test func aConnectionThatDoesNotGoAfterOurCloseIsAborted() async throws {
        var configuration = writerConfiguration
        configuration.shutdownGrace = .milliseconds(100)
        let fixture = try await ServerFixture.start(configuration)
        let stalled = try stalledSubscriber(fixture, rows: 20_000)
        try await expectReasons(fixture, [.connectionDone: 1])
        // Shutting down sends an ERROR the stalled peer never reads: its close cannot complete in time.
        try await fixture.stop()
        try await expectReasons(fixture, [.connectionDone: 1, .connectionAborted: 1])
        stalled.close()
    }

    @Test func aPeerThatPingedAndWentSilentIsTimedOut() async throws {
        var configuration = writerConfiguration
        configuration.protocolLimits.pingIntervalMillis = 100
        configuration.protocolLimits.pingTimeoutMillis = 300
        let fixture = try await ServerFixture.start(configuration)
        let silent = try fixture.connect(name: "silent")
        try silent.send("PING 1\n")
        #expect(try silent.readLines(until: { $0.hasPrefix("ERROR") }).last == "ERROR ping timeout")
        #expect(try silent.readsEndOfStream())
        silent.close()
        try await expectReasons(fixture, [.pingTimeout: 1])
        try await fixture.stop()
    }

    @Test func anErrorIsCountedUnderItsReason() async throws {
        let fixture = try await ServerFixture.start()
        let confused = try fixture.connect(name: "confused")
        try confused.send("FOO bar\n")
        #expect(try confused.readLine() == "ERROR invalid command: FOO")
        #expect(try confused.readsEndOfStream())
        // The server half-closed after its ERROR and counts the connection once the peer has gone too.
        confused.close()
        try await expectReasons(fixture, [.invalidCommand: 1])
        try await fixture.stop()
    }
}
