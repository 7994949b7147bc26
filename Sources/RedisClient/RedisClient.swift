import Logging
import NIOCore
import NIOPosix
import ReplicationCore
import TLSClientSetup

/// Everything a ``RedisClient`` is started with.
public struct RedisClientConfiguration: Sendable {
    public var endpoint: RedisEndpoint
    /// Channels subscribed on every connection (a subscribed connection can send no other command but
    /// `PING`, so publish on a second client).
    public var channels: [String]
    /// `CLIENT SETNAME`, shown by `CLIENT LIST` on the server.
    public var clientName: String?
    public var connectTimeout: TimeAmount
    public var commandTimeout: TimeAmount

    public init(
        endpoint: RedisEndpoint, channels: [String] = [], clientName: String? = nil,
        connectTimeout: TimeAmount = .seconds(5), commandTimeout: TimeAmount = .seconds(5)
    ) {
        self.endpoint = endpoint
        self.channels = channels
        self.clientName = clientName
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
    }
}

/// What the application hears from a ``RedisClient``, always on the client's event loop.
public protocol RedisClientDelegate: AnyObject {
    /// A message on one of the subscribed channels.
    func redisClient(received message: RedisMessage)
    /// Ready (logged in, database selected, channels subscribed), or lost: why, and when it tries again.
    func redisClient(connected: Bool, retryInMillis: Int64?, reason: String?)
}

/// The connection's own figures, for metrics.
public struct RedisConnectionStatistics: Sendable, Equatable {
    public var connected = false
    /// Connections that got ready (logged in and subscribed).
    public var connections = 0
    /// Attempts that failed to connect or to get ready (refused, timed out, AUTH or SELECT refused).
    public var failedAttempts = 0
    /// Ready connections that were lost.
    public var disconnections = 0
    public var messages = 0
    public var messageBytes = 0
    public var commands = 0
    /// Commands answered with an error reply, timed out or lost with their connection.
    public var failedCommands = 0

    public init() {}
}

/// A Redis client on SwiftNIO, with hiredis parsing the replies: pipelined commands, `AUTH`, `SELECT`,
/// subscriptions that are renewed on every connection, timeouts, and reconnection with the same back-off as
/// the replication client (1 s, ×e each time up to 30 s, ±12 % jitter). Confined to one event loop: create
/// it, call it and hear from it there.
public final class RedisClient {
    public let eventLoop: any EventLoop
    public let configuration: RedisClientConfiguration
    public private(set) var statistics = RedisConnectionStatistics()
    private weak var delegate: (any RedisClientDelegate)?
    private let random: () -> Double
    private let logger: Logger
    private var backoff = ReconnectBackoff()
    private var handler: RedisConnectionHandler?
    private var channel: (any Channel)?
    private var ready = false
    private var stopped = false
    private var retry: Scheduled<Void>?
    /// Why this side closed the connection, reported when it is gone.
    private var closeReason: String?

    /// `random` is uniform in -1...1, for the back-off's jitter.
    public init(
        configuration: RedisClientConfiguration, eventLoop: any EventLoop, delegate: (any RedisClientDelegate)?,
        random: @escaping () -> Double = { Double.random(in: -1...1) }, logger: Logger
    ) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.delegate = delegate
        self.random = random
        self.logger = logger
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

    public var isReady: Bool { ready }

    /// Sends one command; fails at once with ``RedisError/notConnected`` while there is no ready connection.
    public func send(_ arguments: [String]) -> EventLoopFuture<RedisValue> {
        pipeline([RESPCommand.arguments(arguments)])[0]
    }

    /// Sends commands back to back in one write; each future gets its own reply.
    public func pipeline(_ commands: [[ByteBuffer]]) -> [EventLoopFuture<RedisValue>] {
        eventLoop.preconditionInEventLoop()
        guard ready, let handler else {
            return commands.map { _ in eventLoop.makeFailedFuture(RedisError.notConnected) }
        }
        return counted(handler.send(commands))
    }

    private func counted(_ futures: [EventLoopFuture<RedisValue>]) -> [EventLoopFuture<RedisValue>] {
        statistics.commands += futures.count
        let this = NIOLoopBound(self, eventLoop: eventLoop)
        for future in futures { future.whenFailure { _ in this.value.statistics.failedCommands += 1 } }
        return futures
    }

    private func connect() {
        guard !stopped else { return }
        let this = NIOLoopBound(self, eventLoop: eventLoop)
        let handler = RedisConnectionHandler(eventLoop: eventLoop, commandTimeout: configuration.commandTimeout) {
            message in
            this.value.received(message)
        }
        let boundHandler = NIOLoopBound(handler, eventLoop: eventLoop)
        let tls = configuration.endpoint.tls?.context
        let host = configuration.endpoint.host
        ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            try ClientTLS.handler(context: tls, connectingTo: host))
                    }
                    try channel.pipeline.syncOperations.addHandler(boundHandler.value)
                }
            }
            .connect(host: configuration.endpoint.host, port: configuration.endpoint.port)
            .whenComplete { result in
                switch result {
                case .success(let channel): this.value.connected(channel, handler: boundHandler.value)
                case .failure(let error):
                    this.value.lost(reason: "cannot connect to \(this.value.configuration.endpoint): \(error)")
                }
            }
    }

    private func connected(_ channel: any Channel, handler: RedisConnectionHandler) {
        guard !stopped else {
            channel.close(promise: nil)
            return
        }
        self.channel = channel
        self.handler = handler
        let this = NIOLoopBound(self, eventLoop: eventLoop)
        closeReason = nil
        channel.closeFuture.whenComplete { _ in
            this.value.lost(reason: this.value.closeReason ?? "Redis closed the connection")
        }
        // Log in, choose the database, name the connection and subscribe in one round trip.
        let endpoint = configuration.endpoint
        var setup: [[String]] = []
        if let password = endpoint.password {
            setup.append(["AUTH"] + (endpoint.username.map { [$0] } ?? []) + [password])
        }
        if endpoint.database != 0 { setup.append(["SELECT", "\(endpoint.database)"]) }
        if let name = configuration.clientName { setup.append(["CLIENT", "SETNAME", name]) }
        // One SUBSCRIBE per channel: each is confirmed by exactly one reply.
        setup += configuration.channels.map { ["SUBSCRIBE", $0] }
        // Ready means Redis answered: with nothing else to send, a PING proves the link (and its TLS handshake).
        if setup.isEmpty { setup.append(["PING"]) }
        let futures = counted(handler.send(setup.map(RESPCommand.arguments)))
        EventLoopFuture.whenAllSucceed(futures, on: eventLoop).whenComplete { result in
            switch result {
            case .success: this.value.becameReady()
            case .failure(let error):
                this.value.closeReason = "setting up the Redis connection failed: \(error)"
                channel.close(promise: nil)
            }
        }
    }

    private func becameReady() {
        guard let channel, channel.isActive else { return }
        ready = true
        backoff.reset()
        statistics.connected = true
        statistics.connections += 1
        logger.info("Redis connection ready", metadata: ["redis": "\(configuration.endpoint)"])
        delegate?.redisClient(connected: true, retryInMillis: nil, reason: nil)
    }

    private func lost(reason: String) {
        if ready {
            statistics.disconnections += 1
        } else {
            statistics.failedAttempts += 1
        }
        ready = false
        statistics.connected = false
        channel = nil
        handler = nil
        guard !stopped else {
            delegate?.redisClient(connected: false, retryInMillis: nil, reason: reason)
            return
        }
        let delay = backoff.nextDelayMillis(random: random())
        logger.warning("\(reason); reconnecting in \(delay) ms", metadata: ["redis": "\(configuration.endpoint)"])
        delegate?.redisClient(connected: false, retryInMillis: delay, reason: reason)
        let this = NIOLoopBound(self, eventLoop: eventLoop)
        retry = eventLoop.scheduleTask(in: .milliseconds(delay)) { this.value.connect() }
    }

    private func received(_ message: RedisMessage) {
        statistics.messages += 1
        statistics.messageBytes += message.payload.count
        delegate?.redisClient(received: message)
    }
}
