import Logging
import NIOCore
import NIOEmbedded
import ReplicationCore
import ReplicationTestSupport
import StreamLog
import Testing

@testable import ReplicationNIO

/// The handler on an `EmbeddedChannel`, with a manual clock that moves with the embedded loop's time.
final class EmbeddedConnection {
    let channel: EmbeddedChannel
    let loop: EmbeddedEventLoop
    let clock = ManualClock(startMillis: 0)
    let hub: ReplicationHub

    init(configuration: ServerConfiguration = ServerConfiguration(serverName: "test.local")) throws {
        loop = EmbeddedEventLoop()
        hub = ReplicationHub(log: InMemoryStreamLog())
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandler(
            ServerConnectionHandler(
                hub: hub, configuration: configuration, clock: clock.clock,
                log: ConnectionLogGate(linesPerInterval: 20, interval: .seconds(10), clock: clock.clock, logger: logger)))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    func send(_ text: String) throws { try channel.writeInbound(ByteBuffer(string: text)) }

    /// Every line the server has written so far.
    func written() throws -> [String] {
        var lines: [String] = []
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            lines += buffer.readString(length: buffer.readableBytes)!.split(separator: "\n").map(String.init)
        }
        return lines
    }

    func advance(millis: Int64) {
        clock.advance(byMillis: millis)
        loop.advanceTime(by: .milliseconds(millis))
    }
}

@Suite struct ServerConnectionHandlerTests {
    @Test func linesArrivingAByteAtATimeAreReadWhole() throws {
        let connection = try EmbeddedConnection(
            configuration: ServerConfiguration(serverName: "test.local", writers: ["w"]))
        _ = try connection.written()
        for byte in "NAME w\nRDATA typing 3 [\"!r\", []]\r\nREPLICATE typing 0\n".utf8 {
            try connection.channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        // The writer's row (taken on its bytes once whole), then the catch-up that includes it.
        connection.loop.run()
        #expect(try connection.written() == ["POSITION typing 3", #"RDATA typing 3 ["!r", []]"#, "POSITION typing 3"])
    }

    @Test func aWritersReadOfRowsAmongOtherLinesIsTakenInOrderUpToARefusedRow() throws {
        let connection = try EmbeddedConnection(
            configuration: ServerConfiguration(serverName: "test.local", writers: ["w"]))
        try connection.send("NAME w\n")
        // Rows in place, a row ending in \r, a line that is not a row, more rows, a refused row (its token is
        // not after the one before), and a row after it that must never be stored.
        try connection.send(
            """
            RDATA typing 1 ["!a", []]
            RDATA typing 2 ["!b", []]\r
            PING 5
            RDATA typing batch ["!c", []]
            RDATA typing 3 ["!d", []]
            RDATA typing 3 ["!e", []]
            RDATA typing 4 ["!f", []]

            """)
        connection.loop.run()
        let written = try connection.written()
        let acknowledgements = written.filter { $0.hasPrefix("POSITION") }
        #expect(acknowledgements == ["POSITION typing 1", "POSITION typing 2", "POSITION typing 3"])
        #expect(written.last?.hasPrefix("ERROR ") == true)
        var page = try connection.hub.log.read(.typing, after: 0, maxBytes: 1 << 16, on: connection.loop).wait()
        #expect(
            page.lines.readString(length: page.lines.readableBytes)!.split(separator: "\n") == [
                #"RDATA typing 1 ["!a", []]"#, #"RDATA typing 2 ["!b", []]"#, #"RDATA typing 3 ["!c", []]"#,
                #"RDATA typing 3 ["!d", []]"#,
            ])
        #expect(page.endToken == 3)
    }

    @Test func greetsThenPingsWhenIdle() throws {
        let connection = try EmbeddedConnection()
        #expect(try connection.written() == ["SERVER test.local", "PING 0"])
        connection.advance(millis: 5_000)
        #expect(try connection.written() == ["PING 5000"])
        try connection.send("NAME w\nREPLICATE events NOW\n")
        #expect(try connection.written() == ["POSITION events 0"])
        connection.advance(millis: 5_000)
        // Something was sent 5 s ago at the latest, so a ping is due again.
        #expect(try connection.written() == ["PING 10000"])
    }

    @Test func aPeerThatPingedIsTimedOut() throws {
        let connection = try EmbeddedConnection()
        _ = try connection.written()
        try connection.send("PING 1\n")
        for _ in 0..<5 { connection.advance(millis: 5_000) }
        #expect(try connection.written().suffix(1) == ["PING 25000"])
        connection.advance(millis: 5_000)
        #expect(try connection.written() == ["ERROR ping timeout"])
        // (An embedded channel cannot half-close, so it closes at once; the abort is tested on loopback.)
        #expect(!connection.channel.isActive)
        #expect(connection.hub.countersSnapshot.closeReasons == [.pingTimeout: 1])
    }

    @Test func aPeerThatNeverPingedStaysConnected() throws {
        let connection = try EmbeddedConnection()
        for _ in 0..<20 { connection.advance(millis: 5_000) }
        #expect(connection.channel.isActive)
        #expect(try connection.written().allSatisfy { $0.hasPrefix("PING ") || $0.hasPrefix("SERVER ") })
    }

    /// (An embedded channel always reports `autoRead`; that the server stops reading is tested on loopback.)
    @Test func aWriterThatTakesNoWritesGetsOnlyItsNewestAcknowledgementOnceItDoes() throws {
        let connection = try EmbeddedConnection(
            configuration: ServerConfiguration(serverName: "test.local", writers: ["pub"]))
        _ = try connection.written()
        try connection.send("NAME pub\n")
        connection.channel.isWritable = false
        connection.channel.pipeline.fireChannelWritabilityChanged()
        try connection.send("RDATA typing 3 [\"!r\", []]\nRDATA typing 4 [\"!r\", []]\nPOSITION typing 9\n")
        connection.loop.run()
        #expect(try connection.written() == [])
        connection.channel.isWritable = true
        connection.channel.pipeline.fireChannelWritabilityChanged()
        #expect(try connection.written() == ["POSITION typing 9"])
        #expect(connection.hub.countersSnapshot.writerAppends == 3)
    }

    @Test func overlongAndInvalidUTF8LinesCloseWithTheirErrors() throws {
        let long = try EmbeddedConnection()
        _ = try long.written()
        try long.send(String(repeating: "x", count: 16385))
        #expect(try long.written() == ["ERROR Line length exceeded"])

        let binary = try EmbeddedConnection()
        _ = try binary.written()
        try binary.channel.writeInbound(ByteBuffer(bytes: Array("NAME ab".utf8) + [0xFF, 0x0A]))
        #expect(
            try binary.written() == [
                "ERROR failed to parse line: UnicodeDecodeError(\"'utf-8' codec can't decode the byte at position 7\")"
            ])
    }
}
