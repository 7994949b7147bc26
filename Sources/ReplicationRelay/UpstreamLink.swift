import Logging
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
/// Its mutable state is touched only on `eventLoop`, where the upstream client lives.
public final class UpstreamLink: Upstream, Service, @unchecked Sendable {
    private let configuration: RelayConfiguration
    private let eventLoop: any EventLoop
    private let clock: ConnectionClock
    private let logger: Logger
    private let status = Mutex(UpstreamStatus())
    private let hub = Mutex<ReplicationHub?>(nil)

    // On `eventLoop` only.
    private var client: ReplicationClient?
    private var session = RelaySession(heads: [Int64](repeating: 0, count: StreamName.all.count))
    private var hasConnected = false
    private var backfills: [ObjectIdentifier: Backfill] = [:]

    public init(
        configuration: RelayConfiguration, eventLoop: any EventLoop, clock: ConnectionClock = .system, logger: Logger
    ) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.clock = clock
        self.logger = logger
    }

    /// The hub whose log this link feeds; set before the service runs.
    public func attach(to hub: ReplicationHub) { self.hub.withLock { $0 = hub } }

    public var currentStatus: UpstreamStatus { status.withLock { $0 } }

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
        try await eventLoop.submit { self.start(feeding: hub) }.get()
    }

    /// Closes the upstream connection and stops reconnecting.
    public func shutDown() async throws {
        try await eventLoop.submit { self.stop() }.get()
    }

    private func start(feeding hub: ReplicationHub) {
        eventLoop.preconditionInEventLoop()
        session = RelaySession(heads: StreamName.all.map { hub.log.currentToken(of: $0) })
        let subscriptions = session.subscriptions
        let client = ReplicationClient(
            configuration: ClientConfiguration(
                host: configuration.host, port: configuration.port, clientName: configuration.clientName,
                expectedServerName: configuration.upstreamServerName, subscriptions: subscriptions,
                protocolLimits: configuration.protocolLimits, tls: configuration.tls),
            eventLoop: eventLoop, delegate: self, clock: clock, logger: logger)
        self.client = client
        logger.info(
            "connecting upstream",
            metadata: [
                "upstream": "\(configuration.host):\(configuration.port)",
                "server_name": "\(configuration.upstreamServerName)",
            ])
        client.start()
    }

    private func stop() {
        eventLoop.preconditionInEventLoop()
        client?.stop()
        for backfill in backfills.values { backfill.finish(.failure(UpstreamError("the relay is shutting down"))) }
    }

    // MARK: Upstream (called by the relay's connections, from any event loop)

    public func forward(_ command: Command) {
        eventLoop.execute { self.forwardOnLoop(command) }
    }

    private func forwardOnLoop(_ command: Command) {
        run(session.workerCommand(command))
    }

    /// Sends a worker's command, or counts it dropped when the queue for a disconnected upstream is full.
    private func send(_ command: Command) {
        let accepted = client?.send(command) ?? false
        let queued = client?.queuedCommandCount ?? 0
        status.withLock { status in
            if accepted { status.forwarded[command.name.index] += 1 } else { status.droppedCommands += 1 }
            status.queuedCommands = queued
        }
        if !accepted {
            logger.warning("upstream queue full: dropped a worker's command", metadata: ["command": "\(command.name)"])
        }
    }

    public func backfill(_ stream: StreamName, after token: Int64, through: Int64, on eventLoop: any EventLoop)
        -> EventLoopFuture<LogPage>
    {
        let promise = eventLoop.makePromise(of: LogPage.self)
        self.eventLoop.execute { self.fetch(stream, from: .token(token), through: through, promise: promise) }
        return promise.futureResult.always { result in
            self.status.withLock { status in
                if case .success = result { status.backfills += 1 } else { status.failedBackfills += 1 }
            }
        }
    }

    /// A short-lived upstream subscription to one stream: rows up to `through`, or only the `POSITION`.
    private func fetch(_ stream: StreamName, from: ReplicateFrom, through: Int64, promise: EventLoopPromise<LogPage>) {
        let backfill = Backfill(
            stream: stream, through: through, maxBytes: configuration.maxBackfillBytes, promise: promise
        ) { [self] finished in backfills[ObjectIdentifier(finished)] = nil }
        backfills[ObjectIdentifier(backfill)] = backfill
        let client = ReplicationClient(
            configuration: ClientConfiguration(
                host: configuration.host, port: configuration.port, clientName: configuration.clientName + "-backfill",
                expectedServerName: configuration.upstreamServerName, subscriptions: [(stream, from)],
                protocolLimits: configuration.protocolLimits, reconnect: false, tls: configuration.tls),
            eventLoop: eventLoop, delegate: backfill, clock: clock, logger: logger)
        backfill.client = client
        client.start()
        let bound = NIOLoopBound(backfill, eventLoop: eventLoop)
        backfill.timeout = eventLoop.scheduleTask(in: configuration.backfillTimeout) {
            bound.value.finish(.failure(UpstreamError("no answer from upstream in time")))
        }
    }

    /// An upstream that does not offer a stream closes the connection when asked for it (Synapse's
    /// master offers `federation` only when a worker sends federation). Asks for each stream that had
    /// not answered yet on a connection of its own, and leaves out the refused ones from then on.
    private func probeOffered(_ streams: [StreamName]) {
        for stream in streams {
            let probe = eventLoop.makePromise(of: LogPage.self)
            fetch(stream, from: .now, through: .max, promise: probe)
            probe.futureResult.whenFailure { [self] error in
                guard (error as? UpstreamError)?.refused == true else { return }
                run(session.streamNotOffered(stream))
            }
        }
    }

    // MARK: The one place with side effects

    private func run(_ actions: [RelaySession.Action]) {
        for action in actions {
            switch action {
            case .store(let stream, let rows, let token, let startsLog):
                store(
                    startsLog
                        ? .startingAt(stream, token: token)
                        : NewBatch(stream: stream, rows: rows, token: .exactly(token)))
            case .send(let command):
                send(command)
            case .resume(let stream, let token):
                client?.resume(stream, after: token)
            case .restartAtNow(let stream):
                logger.error(
                    "the relay fell behind its upstream: rows it missed on this stream are lost to its workers",
                    metadata: ["stream": "\(stream)", "stored_through": "\(session.lastStored[stream.index])"])
                client?.restartAtNow(stream)
            case .probeOffered(let streams):
                probeOffered(streams)
            case .unsubscribe(let stream):
                client?.unsubscribe(stream)
                logger.notice(
                    "upstream does not offer this stream; not asking for it again", metadata: ["stream": "\(stream)"])
            }
        }
    }

    private func store(_ batch: NewBatch) {
        guard let hub = hub.withLock({ $0 }) else { return }
        guard case .exactly(let token) = batch.firstToken else { return }
        let logger = self.logger
        hub.append([batch], on: eventLoop).whenComplete { result in
            switch result {
            case .success(let results):
                if case .failure(let error) = results.first {
                    logger.error(
                        "rows from upstream not stored",
                        metadata: ["stream": "\(batch.stream)", "token": "\(token)", "error": "\(error)"])
                }
            case .failure(let error):
                logger.error(
                    "rows from upstream not stored",
                    metadata: ["stream": "\(batch.stream)", "token": "\(token)", "error": "\(error)"])
            }
        }
    }
}

extension UpstreamLink: ReplicationClientDelegate {
    public func replicationClient(received rows: [String], stream: StreamName, token: Int64) {
        status.withLock { status in
            status.receivedTokens[stream.index] = token
            status.receivedRows[stream.index] += rows.count
        }
        run(session.rowsReceived(rows, stream: stream, token: token))
    }

    public func replicationClient(position token: Int64, stream: StreamName) {
        status.withLock { $0.receivedTokens[stream.index] = token }
        run(session.positionReceived(token, stream: stream))
    }

    public func replicationClientFinishedConnecting() {
        session.connectingFinished()
        logger.info("subscribed upstream", metadata: ["streams": "\(session.subscribed.count)"])
    }

    public func replicationClient(serverError text: String) {
        logger.warning("upstream reported an error", metadata: ["error": "\(text)"])
        run(session.serverError(text))
    }

    public func replicationClient(badRow reason: String, stream: String) {
        logger.warning(
            "upstream sent a row that does not fit its stream",
            metadata: ["stream": "\(stream)", "reason": "\(reason)"])
    }

    public func replicationClient(closingWithError text: String) {
        logger.error("closing the upstream connection", metadata: ["error": "\(text)"])
    }

    public func replicationClient(connected: Bool, retryInMillis: Int64?) {
        let queued = client?.queuedCommandCount ?? 0
        status.withLock { status in
            status.connected = connected
            status.queuedCommands = queued
            if connected, hasConnected { status.reconnects += 1 }
        }
        run(session.connectionChanged(connected: connected))
        if connected {
            hasConnected = true
            logger.info("upstream connected")
        } else {
            logger.warning(
                "upstream connection lost", metadata: ["retry_in_ms": "\(retryInMillis.map(String.init) ?? "never")"])
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
