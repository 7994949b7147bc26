import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import ReplicationCore
import ReplicationNIO
import ServiceLifecycle
import StreamLog
import Synchronization

/// Where a relay connects, and as whom.
public struct RelayConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// The upstream's `SERVER` name; anything else is refused (`Wrong remote`).
    public var upstreamServerName: String
    /// The `NAME` this relay gives upstream (backfill connections add `-backfill`).
    public var clientName: String
    public var protocolLimits: ProtocolConfiguration
    /// How long a request for rows older than the relay's log may take upstream.
    public var backfillTimeout: TimeAmount
    /// The most catch-up bytes one such request may bring (it is held in memory until written).
    public var maxBackfillBytes: Int
    /// Connect over TLS with this context.
    public var tls: NIOSSLContext?

    public init(
        host: String, port: Int, upstreamServerName: String, clientName: String = "replication-sidecar-relay",
        protocolLimits: ProtocolConfiguration = ProtocolConfiguration(), backfillTimeout: TimeAmount = .seconds(30),
        maxBackfillBytes: Int = 64 << 20, tls: NIOSSLContext? = nil
    ) {
        self.tls = tls
        self.host = host
        self.port = port
        self.upstreamServerName = upstreamServerName
        self.clientName = clientName
        self.protocolLimits = protocolLimits
        self.backfillTimeout = backfillTimeout
        self.maxBackfillBytes = maxBackfillBytes
    }
}

/// A relay's one connection upstream, as a service: the I/O around a ``RelaySession``, which decides what
/// to ask for and what to store. It subscribes to every stream after the last token in the relay's own
/// log (`NOW` for a stream it has never seen), stores what arrives with the upstream's tokens and
/// batches (the hub then fans it out to local workers), forwards workers' commands upstream (queued
/// while disconnected), and fetches rows older than the log on a worker's behalf.
///
/// Callable from any thread: everything that changes lives in an ``UpstreamConnection`` bound to
/// `eventLoop`, where the upstream clients live, and is reached only by hopping there.
public final class UpstreamLink: Upstream, Service, Sendable {
    private let eventLoop: any EventLoop
    private let status: NIOLockedValueBox<UpstreamStatus>
    private let hub = Mutex<ReplicationHub?>(nil)
    private let connection: NIOLoopBoundBox<UpstreamConnection>
    private let logger: Logger

    public init(
        configuration: RelayConfiguration, eventLoop: any EventLoop, clock: ConnectionClock = .system, logger: Logger
    ) {
        let status = NIOLockedValueBox(UpstreamStatus())
        self.eventLoop = eventLoop
        self.status = status
        self.logger = logger
        self.connection = .makeBoxSendingValue(
            UpstreamConnection(
                configuration: configuration, eventLoop: eventLoop, clock: clock, status: status, logger: logger),
            eventLoop: eventLoop)
    }

    /// The hub whose log this link feeds; set before the service runs.
    public func attach(to hub: ReplicationHub) { self.hub.withLock { $0 = hub } }

    public var currentStatus: UpstreamStatus { status.withLockedValue { $0 } }

    public func run() async throws {
        try await start()
        await withGracefulShutdownHandler {
            try? await gracefulShutdown()
        } onGracefulShutdown: {
        }
        try await shutDown()
        logger.info("upstream connection stopped")
    }

    /// Connects, resuming every stream where the relay's log is; reconnects with back-off until shut down.
    public func start() async throws {
        guard let hub = hub.withLock({ $0 }) else { preconditionFailure("UpstreamLink.attach(to:) was not called") }
        let connection = self.connection
        try await eventLoop.submit { connection.value.start(feeding: hub) }.get()
    }

    /// Closes the upstream connection and stops reconnecting.
    public func shutDown() async throws {
        let connection = self.connection
        try await eventLoop.submit { connection.value.stop() }.get()
    }

    // MARK: Upstream (called by the relay's connections, from any event loop)

    public func forward(_ command: Command) {
        let connection = self.connection
        eventLoop.execute { connection.value.forward(command) }
    }

    public func backfill(_ stream: StreamName, after token: Int64, through: Int64, on eventLoop: any EventLoop)
        -> EventLoopFuture<LogPage>
    {
        let promise = eventLoop.makePromise(of: LogPage.self)
        let connection = self.connection
        self.eventLoop.execute {
            connection.value.fetch(stream, from: .token(token), through: through, promise: promise)
        }
        let status = self.status
        return promise.futureResult.always { result in
            status.withLockedValue { status in
                if case .success = result { status.backfills += 1 } else { status.failedBackfills += 1 }
            }
        }
    }
}

struct UpstreamError: Error, CustomStringConvertible {
    var description: String
    /// The upstream refused a `REPLICATE` (rather than the connection failing or the upstream stopping).
    var refused = false
    init(_ description: String, refused: Bool = false) {
        self.description = description
        self.refused = refused
    }
}
