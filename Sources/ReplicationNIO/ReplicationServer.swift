import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ReplicationCore
import ServiceLifecycle
import StreamLog

/// The TCP listener that speaks the replication protocol, as a service: it runs until graceful
/// shutdown, then sends `ERROR server shutting down` to every connection and waits for them to go.
public final class ReplicationServer: Service, Sendable {
    public let hub: ReplicationHub
    private let configuration: ServerConfiguration
    private let group: any EventLoopGroup
    private let clock: ConnectionClock
    private let logger: Logger
    private let listener: NIOLockedValueBoxChannel

    public init(
        configuration: ServerConfiguration, log: any StreamLog, group: any EventLoopGroup,
        upstream: (any Upstream)? = nil, shared: (any SharedStreams)? = nil, clock: ConnectionClock = .system,
        logger: Logger
    ) {
        self.configuration = configuration
        self.hub = ReplicationHub(log: log, upstream: upstream, shared: shared)
        self.group = group
        self.clock = clock
        self.logger = logger
        self.listener = NIOLockedValueBoxChannel()
    }

    /// Binds the listener and returns the address it listens on (the real port when `port` is 0).
    @discardableResult
    public func start() async throws -> SocketAddress {
        let hub = self.hub
        let configuration = self.configuration
        let clock = self.clock
        let logger = self.logger
        var bootstrap = ServerBootstrap(group: group)
        if let size = configuration.socketSendBuffer {
            bootstrap = bootstrap.childChannelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(size))
        }
        let channel = try await bootstrap
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // Reads grow up to 256 KiB for a writer streaming rows (fewer appends, hand-overs and writes
            // per row); an idle worker's stay small.
            .childChannelOption(
                .recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 256 * 1024))
            .childChannelOption(
                .writeBufferWaterMark,
                value: .init(low: configuration.writeBufferLowWater, high: configuration.writeBufferHighWater)
            )
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ServerConnectionHandler(hub: hub, configuration: configuration, clock: clock, logger: logger))
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        listener.set(channel)
        let address = channel.localAddress!
        logger.info(
            "replication listener ready",
            metadata: [
                "address": "\(describe(address))", "port": "\(address.port ?? 0)", "server_name": "\(configuration.serverName)",
                "writers": "\(configuration.writers.sorted())",
            ])
        return address
    }

    /// The listener's bound address, once started.
    public var localAddress: SocketAddress? { listener.get()?.localAddress }

    public func run() async throws {
        if listener.get() == nil { try await start() }
        await withGracefulShutdownHandler {
            try? await gracefulShutdown()
        } onGracefulShutdown: {
            self.logger.info("shutting down")
        }
        try await shutDown()
    }

    /// Stops accepting, sends `ERROR server shutting down` to every connection, and waits for them to
    /// close (aborting any that are still open after the grace period).
    public func shutDown() async throws {
        guard let channel = listener.take() else { return }
        try? await channel.close()
        try? await hub.shutDownAllConnections(grace: configuration.shutdownGrace, on: group.next()).get()
        logger.info("replication listener stopped")
    }
}

/// The listening channel, set once at start and taken once at shutdown.
private final class NIOLockedValueBoxChannel: Sendable {
    private let box = NIOLockedValueBox<(any Channel)?>(nil)
    func set(_ channel: any Channel) { box.withLockedValue { $0 = channel } }
    func get() -> (any Channel)? { box.withLockedValue { $0 } }
    func take() -> (any Channel)? {
        box.withLockedValue {
            let channel = $0
            $0 = nil
            return channel
        }
    }
}

/// `host:port` for logs.
func describe(_ address: SocketAddress) -> String {
    guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
    return address.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
}
