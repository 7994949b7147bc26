import Logging
import NIOCore
import RedisClient
import ReplicationCore
import ReplicationMetrics
import ReplicationNIO

/// Everything an observer is started with.
public struct ObserverConfiguration: Sendable {
    public var endpoint: RedisEndpoint
    /// Synapse's `server_name`: the channel its processes publish on.
    public var serverName: String
    /// How often to publish `REPLICATE` so that idle writers announce their positions; 0: never publish.
    public var probeIntervalMillis: Int64

    public init(endpoint: RedisEndpoint, serverName: String, probeIntervalMillis: Int64 = 60_000) {
        self.endpoint = endpoint
        self.serverName = serverName
        self.probeIntervalMillis = probeIntervalMillis
    }

    /// Every command goes on `<server_name>`, `USER_IP` on `<server_name>/USER_IP`.
    public var channels: [String] { [serverName, serverName + "/USER_IP"] }
}

/// Joins a Synapse deployment's Redis and reads its replication bus without taking part: it subscribes to
/// both channels and publishes nothing but a `REPLICATE` probe (when asked to), on a second connection
/// because a subscribed connection cannot publish. Confined to one event loop.
/// Every entry point checks that it runs on `eventLoop` (hence `@unchecked`).
public final class SynapseBusObserver: RedisClientDelegate, @unchecked Sendable {
    public let eventLoop: any EventLoop
    private let configuration: ObserverConfiguration
    private let clock: ConnectionClock
    private let logger: Logger
    private let onMessage: (@Sendable (RedisMessage, Result<BusCommand, BusMalformedReason>) -> Void)?
    private let onConnection: (@Sendable (_ connected: Bool, _ retryInMillis: Int64?, _ reason: String?) -> Void)?
    private var observation = BusObservation()
    private var probes = 0
    private var subscriber: RedisClient?
    private var publisher: RedisClient?
    private var probeTask: RepeatedTask?

    /// `onMessage` hears every message with what it parsed to, after it is counted, and `onConnection` every
    /// change of a Redis connection (for `tail`).
    public init(
        configuration: ObserverConfiguration, eventLoop: any EventLoop, clock: ConnectionClock = .system,
        logger: Logger,
        onMessage: (@Sendable (RedisMessage, Result<BusCommand, BusMalformedReason>) -> Void)? = nil,
        onConnection: (@Sendable (_ connected: Bool, _ retryInMillis: Int64?, _ reason: String?) -> Void)? = nil
    ) {
        self.onConnection = onConnection
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.clock = clock
        self.logger = logger
        self.onMessage = onMessage
    }

    public func start() {
        eventLoop.preconditionInEventLoop()
        let subscriber = RedisClient(
            configuration: RedisClientConfiguration(
                endpoint: configuration.endpoint, channels: configuration.channels,
                clientName: "replication-sidecar-observer"),
            eventLoop: eventLoop, delegate: self, logger: logger)
        self.subscriber = subscriber
        subscriber.start()
        guard configuration.probeIntervalMillis > 0 else { return }
        let publisher = RedisClient(
            configuration: RedisClientConfiguration(
                endpoint: configuration.endpoint, clientName: "replication-sidecar-observer-probe"),
            eventLoop: eventLoop, delegate: self, logger: logger)
        self.publisher = publisher
        publisher.start()
        let interval = TimeAmount.milliseconds(configuration.probeIntervalMillis)
        let this = NIOLoopBound(self, eventLoop: eventLoop)
        probeTask = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in this.value.probe() }
    }

    public func stop() {
        eventLoop.preconditionInEventLoop()
        probeTask?.cancel()
        subscriber?.stop()
        publisher?.stop()
    }

    /// Everything a scrape shows.
    public func snapshot() -> BusSnapshot {
        eventLoop.preconditionInEventLoop()
        let links = [("subscriber", subscriber), ("publisher", publisher)].compactMap { role, client in
            client.map { client in
                let figures = client.statistics
                return RedisLinkFigures(
                    role: role, connected: figures.connected, connections: figures.connections,
                    failedAttempts: figures.failedAttempts, disconnections: figures.disconnections,
                    failedCommands: figures.failedCommands)
            }
        }
        return BusSnapshot(observation: observation, probes: probes, redis: links, process: ProcessStatistics.current())
    }

    public func redisClient(received message: RedisMessage) {
        let parsed = observation.observe(message.payload, atMillis: clock.wallMillis)
        if case .failure(let reason) = parsed {
            // Escaped: the message is whatever anyone published on the channel.
            let shown = JSONText.string(String(decoding: message.payload.prefix(200), as: UTF8.self))
            logger.debug("not a bus command", metadata: ["reason": "\(reason.rawValue)", "message": "\(shown)"])
        }
        onMessage?(message, parsed)
    }

    /// Both connections ready: probe at once, so that positions (and any gap while away) are known now
    /// rather than a probe interval later.
    public func redisClient(connected: Bool, retryInMillis: Int64?, reason: String?) {
        onConnection?(connected, retryInMillis, reason)
        if connected, subscriber?.isReady == true, publisher?.isReady == true { probe() }
    }

    private func probe() {
        guard let publisher, publisher.isReady, subscriber?.isReady == true else { return }
        let this = NIOLoopBound(self, eventLoop: eventLoop)
        publisher.send(["PUBLISH", configuration.serverName, BusCommand.replicate.message]).whenSuccess { _ in
            this.value.probes += 1
        }
    }
}
