import ReplicationCore
import ReplicationNIO
import ReplicationTestSupport
import Testing

/// A flood of bad connections on real sockets: the log keeps a few lines per reason and summarises the
/// rest once the interval ends, while the counters count every connection.
@Suite struct LogFloodTests {
    @Test func aFloodOfBadConnectionsIsSummarisedPerReason() async throws {
        let clock = ManualClock()
        let captured = CapturedLog()
        var configuration = ServerConfiguration(serverName: "test.local")
        configuration.connectionLinesPerInterval = 5
        configuration.connectionLogInterval = .seconds(10)
        let fixture = try await ServerFixture.start(configuration, clock: clock.clock, logger: captured.logger)
        do {
            try await flood(fixture, clock: clock, captured: captured)
        } catch {
            try await fixture.stop()
            throw error
        }
        try await fixture.stop()
    }

    func flood(_ fixture: ServerFixture, clock: ManualClock, captured: CapturedLog) async throws {
        let connections = 60
        for _ in 0..<connections {
            let socket = try LineSocket(port: fixture.port)
            _ = try socket.readLines(2)
            try socket.send("BOGUS line\n")
            #expect(try socket.readLine() == "ERROR invalid command: BOGUS")
            socket.close()
        }
        try await waitUntil(seconds: 30) {
            fixture.server.hub.countersSnapshot.closeReasons[.invalidCommand] == connections
        }
        let closedLines = captured.lines("connection closed")
        #expect(closedLines.count == 5)
        #expect(closedLines.allSatisfy { $0.metadata["reason"] == "invalid_command" })
        #expect(captured.lines("connection opened").count == 5)

        // The interval ends: one line per kind summarises what was kept out.
        clock.advance(byMillis: 10_000)
        let summary = "55 more connections closed for invalid_command in the last 10 s"
        try await waitUntil(seconds: 30) { !captured.lines(summary).isEmpty }
        #expect(captured.lines(summary).count == 1)
        #expect(captured.lines(summary).first?.metadata["suppressed"] == "55")
        #expect(captured.lines("55 more connections opened in the last 10 s").count == 1)

        // A new interval logs again.
        let late = try LineSocket(port: fixture.port)
        _ = try late.readLines(2)
        late.close()
        try await waitUntil(seconds: 30) {
            captured.lines("connection closed").contains { $0.metadata["reason"] == "ConnectionDone" }
        }
    }
}
