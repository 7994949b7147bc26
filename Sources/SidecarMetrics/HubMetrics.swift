import Logging
import MetricsExporter
import NIOCore
import NIOPosix
import ReplicationCore
import ReplicationMetrics
import ReplicationNIO
import ServiceLifecycle
import Synchronization

/// Feeds the HTTP endpoint from the running server: one snapshot per scrape, taken on each event loop.
public final class HubMetricsSource: MetricsSource {
    private let server: ReplicationServer
    private let upstream: (@Sendable () -> UpstreamStatus)?
    private let upstreamAddress: String
    private let moreFamilies: (@Sendable () -> [FamilySamples])?
    private let sharedStreamsConnected: (@Sendable () -> Bool)?
    private let clock: ConnectionClock
    private let scrapes = Mutex(ScrapeStatistics())

    /// `upstream` reports a relay's upstream connection at `upstreamAddress` (nil for a hub); `moreFamilies`
    /// adds what the server's other parts show (the Redis of shared streams), and `sharedStreamsConnected`
    /// says whether that Redis is connected.
    public init(
        server: ReplicationServer, upstream: (@Sendable () -> UpstreamStatus)? = nil, upstreamAddress: String = "",
        moreFamilies: (@Sendable () -> [FamilySamples])? = nil, sharedStreamsConnected: (@Sendable () -> Bool)? = nil,
        clock: ConnectionClock = .system
    ) {
        self.server = server
        self.upstream = upstream
        self.upstreamAddress = upstreamAddress
        self.moreFamilies = moreFamilies
        self.sharedStreamsConnected = sharedStreamsConnected
        self.clock = clock
    }

    public func scrape(openMetrics: Bool) throws -> (body: String, contentType: String) {
        let hub = server.hub
        // Called on libmicrohttpd's thread, never on an event loop, so waiting here is safe.
        let connections = try hub.connectionTotals(on: MultiThreadedEventLoopGroup.singleton.next()).wait()
        let snapshot = MetricsSnapshot(
            connections: connections, counters: hub.countersSnapshot,
            headTokens: StreamName.all.map { hub.log.currentToken(of: $0) },
            process: ProcessStatistics.current(), scrapes: scrapes.withLock { $0 }, upstream: upstream?())
        let format: ExpositionFormat = openMetrics ? .openMetrics : .text
        let families = Exposition.families(snapshot) + (moreFamilies?() ?? [])
        return (Exposition.render(families, as: format), format.contentType)
    }

    public func scrapeFinished(seconds: Double, failed: Bool) {
        scrapes.withLock {
            $0.lastDurationSeconds = seconds
            if failed { $0.errors += 1 }
        }
    }

    public func slowClientClosed() { scrapes.withLock { $0.slowClientsClosed += 1 } }

    public var isHealthy: Bool { server.localAddress != nil }

    /// Listening, and connected upstream in relay mode or to Redis with shared streams: before that a worker
    /// would get no new rows.
    public var isReady: Bool {
        isHealthy && (upstream?().connected ?? true) && (sharedStreamsConnected?() ?? true)
    }

    public func statusPage(telemetryPath: String) throws -> String {
        let hub = server.hub
        // On libmicrohttpd's thread, never on an event loop: waiting is safe.
        let connections = try hub.connectionSnapshots(on: MultiThreadedEventLoopGroup.singleton.next()).wait()
        let page = StatusPage(
            connections: connections, headTokens: StreamName.all.map { hub.log.currentToken(of: $0) },
            counters: hub.countersSnapshot, upstream: upstream.map { (upstreamAddress, $0()) },
            listening: server.localAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "not listening",
            telemetryPath: telemetryPath, nowMillis: clock.wallMillis)
        return page.render()
    }
}

/// The metrics endpoint as a service: it starts before the replication listener and stops after it.
public final class MetricsService: Service {
    private let http: MetricsHTTPServer
    private let logger: Logger

    public init(http: MetricsHTTPServer, logger: Logger) {
        self.http = http
        self.logger = logger
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            try? await gracefulShutdown()
        } onGracefulShutdown: {}
        http.stop()
        logger.info("metrics endpoint stopped")
    }
}
