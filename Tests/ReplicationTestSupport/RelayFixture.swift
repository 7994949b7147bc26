import Logging
import NIOPosix
import ReplicationCore
import ReplicationNIO
import ReplicationRelay
import StreamLog

/// A relay on `127.0.0.1` with a free port: a server whose rows come from `upstreamPort`, started and
/// stopped by the test that uses it.
public final class RelayFixture: Sendable {
    public let server: ServerFixture
    public let link: UpstreamLink

    public static func start(
        upstreamPort: Int, upstreamServerName: String, log: any StreamLog = InMemoryStreamLog(),
        serverName: String = "relay.local"
    ) async throws -> RelayFixture {
        var logger = Logger(label: "test-relay")
        logger.logLevel = .critical
        let link = UpstreamLink(
            configuration: RelayConfiguration(
                host: "127.0.0.1", port: upstreamPort, upstreamServerName: upstreamServerName, clientName: "relay",
                backfillTimeout: .seconds(20)),
            eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger)
        let server = try await ServerFixture.start(ServerConfiguration(serverName: serverName), log: log, upstream: link)
        link.attach(to: server.server.hub)
        try await link.start()
        return RelayFixture(server: server, link: link)
    }

    private init(server: ServerFixture, link: UpstreamLink) {
        self.server = server
        self.link = link
    }

    public var port: Int { server.port }

    public func connect(name: String) throws -> LineSocket { try server.connect(name: name) }

    public func stop() async throws {
        try await server.stop()
        try await link.shutDown()
    }
}
