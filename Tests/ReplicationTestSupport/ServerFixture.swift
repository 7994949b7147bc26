import Logging
import NIOCore
import NIOPosix
import ReplicationCore
import ReplicationNIO
import StreamLog

/// A replication server on `127.0.0.1` with a free port, started and stopped by the test that uses it.
public final class ServerFixture: Sendable {
    public let server: ReplicationServer
    public let port: Int
    public let log: any StreamLog

    public static func start(
        _ configuration: ServerConfiguration = ServerConfiguration(), log: any StreamLog = InMemoryStreamLog(),
        port: Int = 0, upstream: (any Upstream)? = nil, clock: ConnectionClock = .system,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger? = nil
    ) async throws -> ServerFixture {
        ignoreBrokenPipes()
        var configuration = configuration
        configuration.host = "127.0.0.1"
        // Tests leave their clients open; don't wait the production grace period for them.
        if configuration.shutdownGrace == ServerConfiguration().shutdownGrace { configuration.shutdownGrace = .milliseconds(200) }
        configuration.port = port
        var quiet = Logger(label: "test-server")
        quiet.logLevel = .critical
        let logger = logger ?? quiet
        let server = ReplicationServer(
            configuration: configuration, log: log, group: group, upstream: upstream,
            clock: clock, logger: logger)
        let address = try await server.start()
        return ServerFixture(server: server, port: address.port!, log: log)
    }

    private init(server: ReplicationServer, port: Int, log: any StreamLog) {
        self.server = server
        self.port = port
        self.log = log
    }

    public func stop() async throws { try await server.shutDown() }

    /// What the server reports of each open connection, as the metrics endpoint sees it.
    public func snapshots() async throws -> [ConnectionSnapshot] {
        try await server.hub.connectionSnapshots(on: MultiThreadedEventLoopGroup.singleton.next()).get()
    }

    /// A connected client that has read the greeting (`SERVER`, `PING`) and sent `NAME`.
    public func connect(name: String, receiveBuffer: Int? = nil) throws -> LineSocket {
        let socket = try LineSocket(port: port, receiveBuffer: receiveBuffer)
        let greeting = try socket.readLines(2)
        guard greeting[0].hasPrefix("SERVER "), greeting[1].hasPrefix("PING ") else {
            throw SocketError("unexpected greeting \(greeting)")
        }
        try socket.send("NAME \(name)\n")
        return socket
    }
}

/// A realistic `events` row of about 150 bytes.
public func eventRow(_ index: Int) -> String {
    #"["ev", ["$\#(index)-abcdefghijklmnop:test.local", "!room\#(index % 50):test.local", "m.room.message", null, null, null]]"#
}
