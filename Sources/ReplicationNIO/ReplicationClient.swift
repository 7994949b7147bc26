import Logging
import NIOCore
import NIOSSL
import NIOPosix
import ReplicationCore
import TLSClientSetup

/// What the application hears from a ``ReplicationClient``, always on the client's event loop.
public protocol ReplicationClientDelegate: AnyObject {
    /// One whole batch of rows of one token, in order; the client resumes after `token` next time.
    func replicationClient(received rows: [String], stream: StreamName, token: Int64)
    /// `POSITION` from the server: caught up on a stream, or a writer's batch acknowledged.
    func replicationClient(position token: Int64, stream: StreamName)
    /// Every subscribed stream has answered with `POSITION` on this connection.
    func replicationClientFinishedConnecting()
    /// The server sent `ERROR`; it closes the connection after it.
    func replicationClient(serverError text: String)
    /// A row that did not fit its stream's shape was dropped.
    func replicationClient(badRow reason: String, stream: String)
    /// This side closes the connection with an `ERROR` of its own (e.g. `Wrong remote`).
    func replicationClient(closingWithError text: String)
    /// Connected, or lost with the delay before the next attempt.
    func replicationClient(connected: Bool, retryInMillis: Int64?)
    /// TLS failed because one side does not trust the other: reconnecting will fail the same way.
    func replicationClient(trustRefused reason: String)
}

extension ReplicationClientDelegate {
    /// By default the client keeps reconnecting (the certificates may be replaced in the meantime).
    public func replicationClient(trustRefused reason: String) {}
}

/// Everything a client is started with.
public struct ClientConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var clientName: String
    /// A writer's secret for servers that check writers' credentials.
    public var secret: String?
    /// Speak TLS with this context (see ``TransportSecurity/clientContext(ca:certificate:key:)``).
    public var tls: NIOSSLContext?
    public var expectedServerName: String
    public var subscriptions: [(StreamName, ReplicateFrom)]
    public var protocolLimits: ProtocolConfiguration
    /// Whether to reconnect (with the back-off) after the connection is lost.
    public var reconnect: Bool

    public init(
        host: String, port: Int, clientName: String, expectedServerName: String,
        subscriptions: [(StreamName, ReplicateFrom)], protocolLimits: ProtocolConfiguration = ProtocolConfiguration(),
        reconnect: Bool = true, secret: String? = nil, tls: NIOSSLContext? = nil
    ) {
        self.secret = secret
        self.tls = tls
        self.host = host
        self.port = port
        self.clientName = clientName
        self.expectedServerName = expectedServerName
        self.subscriptions = subscriptions
        self.protocolLimits = protocolLimits
        self.reconnect = reconnect
    }
}

/// A replication client (a worker's end): connects, subscribes, hands rows over in whole batches, and
/// reconnects with back-off, resuming each stream after the last token it handed over. Confined to one
/// event loop: create it, call it and hear from it there.
public final class ReplicationClient {
    public let eventLoop: any EventLoop
    private let configuration: ClientConfiguration
    private let clock: ConnectionClock
    private let random: () -> Double
    private var logger: Logger
    private weak var delegate: (any ReplicationClientDelegate)?
    private var session: ClientSession
    private var channel: (any Channel)?
    private var handler: ClientConnectionHandler?
    private var stopped = false
    private var retry: Scheduled<Void>?

    /// `random` is uniform in -1...1, for the back-off's jitter.
    public init(
        configuration: ClientConfiguration, eventLoop: any EventLoop, delegate: any ReplicationClientDelegate,
        clock: ConnectionClock = .system, random: @escaping () -> Double = { Double.random(in: -1...1) }, logger: Logger
    ) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.delegate = delegate
        self.clock = clock
        self.random = random
        self.logger = logger
        self.session = ClientSession(subscriptions: configuration.subscriptions)
    }

    public func start() {
        eventLoop.preconditionInEventLoop()
        connect()
    }

    /// Closes the connection and stops reconnecting.
    public func stop() {
        eventLoop.preconditionInEventLoop()
        stopped = true
        retry?.cancel()
        channel?.close(promise: nil)
    }

    /// The next connection resumes `stream` after `token` (what the application really kept).
    public func resume(_ stream: StreamName, after token: Int64) {
        eventLoop.preconditionInEventLoop()
        session.processed(stream, through: token)
    }

    /// The next connection asks for `stream` from `NOW`.
    public func restartAtNow(_ stream: StreamName) {
        eventLoop.preconditionInEventLoop()
        session.restartAtNow(stream)
    }

    /// Leaves a stream out of the next connections' `REPLICATE`s (the server does not offer it).
    public func unsubscribe(_ stream: StreamName) {
        eventLoop.preconditionInEventLoop()
        session.unsubscribe(stream)
    }

    /// Commands waiting for the next connection.
    public var queuedCommandCount: Int { session.queued.count }

    /// Sends a command now, or after reconnecting if disconnected. False if the offline queue is full.
    @discardableResult
    public func send(_ command: Command) -> Bool {
        sendIfConnected(command) || session.queue(command)
    }

    /// Sends a command now; false, and nothing queued, if disconnected (for a caller that sends again
    /// itself after reconnecting, in its own order).
    public func sendIfConnected(_ command: Command) -> Bool {
        eventLoop.preconditionInEventLoop()
        guard let handler, handler.send(command) else { return false }
        session.sent(command)
        return true
    }

    private func connect() {
        guard !stopped else { return }
        let handler = ClientConnectionHandler(
            machine: ClientConnectionStateMachine(
                clientName: configuration.clientName, secret: configuration.secret,
                expectedServerName: configuration.expectedServerName,
                subscriptions: session.positions, syncingUsers: session.syncingUsers,
                configuration: configuration.protocolLimits, now: clock.monotonicMillis),
            queued: session.takeQueued(), limits: configuration.protocolLimits, clock: clock, client: self)
        let maxLine = configuration.protocolLimits.maxLineLength
        // The bootstrap uses only this client's event loop, so these are touched on it alone.
        let boundHandler = NIOLoopBound(handler, eventLoop: eventLoop)
        let this = NIOLoopBound(self, eventLoop: eventLoop)
        let tls = configuration.tls
        let host = configuration.host
        ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            try ClientTLS.handler(context: tls, connectingTo: host))
                    }
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(LineFrameDecoder(maxLineLength: maxLine)), boundHandler.value,
                    ])
                }
            }
            .connect(host: configuration.host, port: configuration.port)
            .whenComplete { result in this.value.connected(result, handler: boundHandler.value) }
    }

    private func connected(_ result: Result<any Channel, any Error>, handler: ClientConnectionHandler) {
        switch result {
        case .success(let channel):
            self.channel = channel
            self.handler = handler
            delegate?.replicationClient(connected: true, retryInMillis: nil)
            let this = NIOLoopBound(self, eventLoop: eventLoop)
            channel.closeFuture.whenComplete { _ in this.value.connectionLost() }
        case .failure(let error):
            logger.debug("connect failed", metadata: ["error": "\(error)"])
            connectionLost()
        }
    }

    private func connectionLost() {
        channel = nil
        handler = nil
        guard !stopped else { return }
        guard configuration.reconnect else {
            delegate?.replicationClient(connected: false, retryInMillis: nil)
            return
        }
        let delay = session.backoff.nextDelayMillis(random: random())
        delegate?.replicationClient(connected: false, retryInMillis: delay)
        let this = NIOLoopBound(self, eventLoop: eventLoop)
        retry = eventLoop.scheduleTask(in: .milliseconds(delay)) { this.value.connect() }
    }

    // MARK: From the handler

    func transportFailed(_ error: any Error) {
        logger.debug("connection failed", metadata: ["error": "\(error)"])
        if TransportSecurity.refusedTrust(error) { delegate?.replicationClient(trustRefused: "\(error)") }
    }

    func closingWithError(_ text: String) {
        logger.warning("closing the connection", metadata: ["error": "\(text)"])
        delegate?.replicationClient(closingWithError: text)
    }

    func handle(_ event: ClientConnectionStateMachine.Event) {
        switch event {
        case .rows(let stream, let token, let rows):
            session.processed(stream, through: token)
            delegate?.replicationClient(received: rows, stream: stream, token: token)
        case .position(let stream, let token):
            session.processed(stream, through: token)
            delegate?.replicationClient(position: token, stream: stream)
        case .finishedConnecting:
            session.backoff.reset()
            delegate?.replicationClientFinishedConnecting()
        case .remoteError(let text):
            logger.warning("server reported an error", metadata: ["error": "\(text)"])
            delegate?.replicationClient(serverError: text)
        case .badRow(let stream, let reason):
            logger.warning("dropped a bad row", metadata: ["stream": "\(stream)", "reason": "\(reason)"])
            delegate?.replicationClient(badRow: reason, stream: stream)
        case .sync, .reply:
            break
        }
    }
}

/// One client connection: asks the machine, performs the answer.
final class ClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = InboundFrame
    typealias OutboundOut = ByteBuffer

    private var machine: ClientConnectionStateMachine
    private var queued: [Command]
    private let pingIntervalMillis: Int64
    private let maxLineLength: Int
    private let clock: ConnectionClock
    private unowned let client: ReplicationClient
    private var context: ChannelHandlerContext?
    private var keepaliveTask: RepeatedTask?

    init(
        machine: ClientConnectionStateMachine, queued: [Command], limits: ProtocolConfiguration, clock: ConnectionClock,
        client: ReplicationClient
    ) {
        self.machine = machine
        self.queued = queued
        self.pingIntervalMillis = limits.pingIntervalMillis
        self.maxLineLength = limits.maxLineLength
        self.clock = clock
        self.client = client
    }

    /// Sends now if connected; false if this connection cannot take it.
    func send(_ command: Command) -> Bool {
        guard context != nil else { return false }
        run(machine.send(command, now: clock.monotonicMillis))
        context?.flush()
        return true
    }

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        let (commands, finished) = machine.connectionActive(now: clock.monotonicMillis, wallMillis: clock.wallMillis)
        for command in commands { write(command) }
        for command in queued { run(machine.send(command, now: clock.monotonicMillis)) }
        queued = []
        context.flush()
        if finished { client.handle(.finishedConnecting) }
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        keepaliveTask = context.eventLoop.scheduleRepeatedTask(
            initialDelay: .milliseconds(pingIntervalMillis), delay: .milliseconds(pingIntervalMillis)
        ) { _ in
            this.value.run(this.value.machine.tick(
                now: this.value.clock.monotonicMillis, wallMillis: this.value.clock.wallMillis))
            this.value.context?.flush()
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = clock.monotonicMillis
        switch unwrapInboundIn(data).text() {
        case .failure(let error):
            run(machine.lineRejected(error, now: now))
        case .success(let text):
            for event in machine.lineReceived(text[...], now: now) {
                if case .reply(let outbound) = event { run(outbound) } else { client.handle(event) }
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        for command in machine.writabilityChanged(isWritable: context.channel.isWritable, now: clock.monotonicMillis) {
            write(command)
        }
        context.flush()
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        client.transportFailed(error)
        _ = machine.connectionClosed(.failed)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        _ = machine.connectionClosed(.closedByPeer)
        keepaliveTask?.cancel()
        self.context = nil
        context.fireChannelInactive()
    }

    private func run(_ outbound: ConnectionStateMachine.Outbound) {
        guard let context else { return }
        switch outbound {
        case .nothing: break
        case .write(let command): write(command)
        case .writeErrorAndClose(let error):
            if case .error(let text) = error { client.closingWithError(text) }
            let channel = context.channel
            write(error)
            context.writeAndFlush(wrapOutboundOut(ByteBuffer())).whenComplete { _ in channel.close(promise: nil) }
        case .abort:
            _ = machine.connectionClosed(.aborted)
            context.close(promise: nil)
        }
    }

    private func write(_ command: Command) {
        guard let context, let buffer = encodedLine(command, maxLength: maxLineLength, allocator: context.channel.allocator)
        else { return }
        context.write(wrapOutboundOut(buffer), promise: nil)
    }
}
