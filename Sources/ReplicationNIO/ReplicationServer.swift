import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
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
    private let listeners: Listeners
    private let connectionLog: ConnectionLogGate
    private let summaries = NIOLockedValueBox<RepeatedTask?>(nil)

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
        self.listeners = Listeners()
        self.connectionLog = ConnectionLogGate(
            linesPerInterval: configuration.connectionLinesPerInterval, interval: configuration.connectionLogInterval,
            clock: clock, logger: logger)
    }

    /// Binds the listener (and the TLS listener, when configured) and returns the address it listens on
    /// (the real port when `port` is 0).
    @discardableResult
    public func start() async throws -> SocketAddress {
        let admission = Admission(allowFrom: configuration.allowFrom, maxConnections: configuration.maxConnections)
        let plain = try await bind(port: configuration.port, tls: nil, admission: admission)
        listeners.add(plain)
        if let tls = configuration.tls {
            listeners.add(try await bind(port: tls.port, tls: tls.context, admission: admission))
        }
        let address = plain.localAddress!
        let connectionLog = self.connectionLog
        // Often enough that a summary follows its interval closely, whenever the flood stopped.
        let period = TimeAmount.nanoseconds(min(configuration.connectionLogInterval.nanoseconds, 1_000_000_000))
        summaries.withLockedValue {
            $0 = group.next().scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
                connectionLog.summariseEndedIntervals()
            }
        }
        logger.info(
            "replication listener ready",
            metadata: [
                "address": "\(describe(address))", "port": "\(address.port ?? 0)", "server_name": "\(configuration.serverName)",
                "tls_port": "\(tlsLocalAddress?.port.map(String.init) ?? "none")",
                "writers": "\(configuration.writers.sorted())",
                "writers_with_credentials": "\(configuration.writerCredentials.map { $0.hashes.keys.sorted() } ?? [])",
                "allow_from": "\(configuration.allowFrom.map(\.description))",
            ])
        return address
    }

    private func bind(port: Int, tls: NIOSSLContext?, admission: Admission) async throws -> any Channel {
        let hub = self.hub
        let configuration = self.configuration
        let clock = self.clock
        let logger = self.logger
        let connectionLog = self.connectionLog
        var bootstrap = ServerBootstrap(group: group)
        if let size = configuration.socketSendBuffer {
            bootstrap = bootstrap.childChannelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(size))
        }
        return try await bootstrap
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
                if let refusal = admission.admit(channel.remoteAddress) {
                    hub.count { $0.closeReasons[refusal, default: 0] += 1 }
                    logger.debug(
                        "connection refused",
                        metadata: ["peer": "\(channel.remoteAddress.map(describe) ?? "unknown")", "reason": "\(refusal.rawValue)"])
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in admission.release() }
                return channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.addHandler(
                        ServerConnectionHandler(
                            hub: hub, configuration: configuration, clock: clock, log: connectionLog))
                }
            }
            .bind(host: configuration.host, port: port)
            .get()
    }

    /// The listener's bound address, once started.
    public var localAddress: SocketAddress? { listeners.all().first?.localAddress }

    /// The TLS listener's bound address, once started with one.
    public var tlsLocalAddress: SocketAddress? {
        configuration.tls == nil ? nil : listeners.all().dropFirst().first?.localAddress
    }

    public func run() async throws {
        if listeners.all().isEmpty { try await start() }
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
        let channels = listeners.takeAll()
        guard !channels.isEmpty else { return }
        for channel in channels { try? await channel.close() }
        try? await hub.shutDownAllConnections(grace: configuration.shutdownGrace, on: group.next()).get()
        summaries.withLockedValue { $0.take()?.cancel() }
        connectionLog.summariseEndedIntervals(atShutdown: true)
        logger.info("replication listener stopped")
    }
}

/// The listening channels, added at start and taken once at shutdown.
private final class Listeners: Sendable {
    private let box = NIOLockedValueBox<[any Channel]>([])
    func add(_ channel: any Channel) { box.withLockedValue { $0.append(channel) } }
    func all() -> [any Channel] { box.withLockedValue { $0 } }
    func takeAll() -> [any Channel] {
        box.withLockedValue {
            let channels = $0
            $0 = []
            return channels
        }
    }
}

/// `host:port` for logs.
func describe(_ address: SocketAddress) -> String {
    guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
    return address.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
}
