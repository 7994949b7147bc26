import Logging
import NIOConcurrencyHelpers
import NIOCore
import ReplicationCore
import ReplicationNIO
import StreamLog

/// What an ``UpstreamLink`` changes, confined to its event loop (the link reaches it only there): the
/// upstream client, the ``RelaySession`` deciding what to ask for and store, and the backfills under way.
/// Every event of the client becomes session actions, performed in `run(_:)`.
final class UpstreamConnection {
    private let configuration: RelayConfiguration
    private let eventLoop: any EventLoop
    private let clock: ConnectionClock
    private let status: NIOLockedValueBox<UpstreamStatus>
    private let logger: Logger
    private var hub: ReplicationHub?
    private var client: ReplicationClient?
    private var session = RelaySession(heads: [Int64](repeating: 0, count: StreamName.all.count))
    private var hasConnected = false
    private var backfills: [ObjectIdentifier: Backfill] = [:]

    init(
        configuration: RelayConfiguration, eventLoop: any EventLoop, clock: ConnectionClock,
        status: NIOLockedValueBox<UpstreamStatus>, logger: Logger
    ) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.clock = clock
        self.status = status
        self.logger = logger
    }

    func start(feeding hub: ReplicationHub) {
        self.hub = hub
        session = RelaySession(heads: StreamName.all.map { hub.log.currentToken(of: $0) })
        let client = ReplicationClient(
            configuration: ClientConfiguration(
                host: configuration.host, port: configuration.port, clientName: configuration.clientName,
                expectedServerName: configuration.upstreamServerName, subscriptions: session.subscriptions,
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

    func stop() {
        client?.stop()
        for backfill in backfills.values { backfill.finish(.failure(UpstreamError("the relay is shutting down"))) }
    }

    func forward(_ command: Command) {
        run(session.workerCommand(command))
    }

    /// A short-lived upstream subscription to one stream: rows up to `through`, or only the `POSITION`.
    func fetch(_ stream: StreamName, from: ReplicateFrom, through: Int64, promise: EventLoopPromise<LogPage>) {
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
        backfill.timeout = eventLoop.assumeIsolated().scheduleTask(in: configuration.backfillTimeout) {
            backfill.finish(.failure(UpstreamError("no answer from upstream in time")))
        }
    }

    /// Sends a worker's command, or counts it dropped when the queue for a disconnected upstream is full.
    private func send(_ command: Command) {
        let accepted = client?.send(command) ?? false
        let queued = client?.queuedCommandCount ?? 0
        status.withLockedValue { status in
            if accepted { status.forwarded[command.name.index] += 1 } else { status.droppedCommands += 1 }
            status.queuedCommands = queued
        }
        if !accepted {
            logger.warning("upstream queue full: dropped a worker's command", metadata: ["command": "\(command.name)"])
        }
    }

    /// An upstream that does not offer a stream closes the connection when asked for it (Synapse's
    /// master offers `federation` only when a worker sends federation). Asks for each stream that had
    /// not answered yet on a connection of its own, and leaves out the refused ones from then on.
    private func probeOffered(_ streams: [StreamName]) {
        for stream in streams {
            let probe = eventLoop.makePromise(of: LogPage.self)
            fetch(stream, from: .now, through: .max, promise: probe)
            probe.futureResult.assumeIsolated().whenFailure { [self] error in
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
        guard let hub else { return }
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

extension UpstreamConnection: ReplicationClientDelegate {
    func replicationClient(received rows: [String], stream: StreamName, token: Int64) {
        status.withLockedValue { status in
            status.receivedTokens[stream.index] = token
            status.receivedRows[stream.index] += rows.count
        }
        run(session.rowsReceived(rows, stream: stream, token: token))
    }

    func replicationClient(position token: Int64, stream: StreamName) {
        status.withLockedValue { $0.receivedTokens[stream.index] = token }
        run(session.positionReceived(token, stream: stream))
    }

    func replicationClientFinishedConnecting() {
        session.connectingFinished()
        status.withLockedValue { $0.subscribed = true }
        logger.info("subscribed upstream", metadata: ["streams": "\(session.subscribed.count)"])
    }

    func replicationClient(serverError text: String) {
        logger.warning("upstream reported an error", metadata: ["error": "\(text)"])
        run(session.serverError(text))
    }

    func replicationClient(badRow reason: String, stream: String) {
        logger.warning(
            "upstream sent a row that does not fit its stream",
            metadata: ["stream": "\(stream)", "reason": "\(reason)"])
    }

    func replicationClient(closingWithError text: String) {
        logger.error("closing the upstream connection", metadata: ["error": "\(text)"])
    }

    func replicationClient(connected: Bool, retryInMillis: Int64?) {
        let queued = client?.queuedCommandCount ?? 0
        status.withLockedValue { status in
            status.connected = connected
            status.subscribed = false
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
