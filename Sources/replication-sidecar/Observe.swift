import ArgumentParser
import BusObserver
import Foundation
import Logging
import MetricsExporter
import NIOPosix
import ServiceLifecycle
import SidecarMetrics

struct Observe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Watch today's Synapse replicate over Redis and export what flows on the bus as metrics.",
        discussion: """
            Subscribes to the channels <server-name> and <server-name>/USER_IP of a Synapse deployment's Redis \
            and counts every command: positions and rows per stream and writing instance, when each instance \
            was last heard, gaps, syncing users, malformed messages. It publishes nothing but a REPLICATE every \
            --probe-interval seconds (and after each reconnect), which makes every writer announce its \
            positions. SIGTERM or SIGINT stops it with exit code 0.
            """)

    @OptionGroup var redis: RedisOptions

    @Option(help: "Synapse's server_name: the Redis channel its processes publish on.")
    var serverName: String

    @Option(help: "Seconds between REPLICATE probes (idle writers announce their positions); 0 never publishes.")
    var probeInterval = 60

    @OptionGroup var metrics: MetricsOptions

    @OptionGroup var logging: LogOptions

    func validate() throws {
        try validateServerName(serverName)
        guard probeInterval >= 0 else { throw ValidationError("--probe-interval must be 0 (never) or more seconds") }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        let logger = logging.bootstrap()
        let endpoint = try redis.endpoint()
        let observer = SynapseBusObserver(
            configuration: ObserverConfiguration(
                endpoint: endpoint, serverName: serverName, probeIntervalMillis: Int64(probeInterval) * 1000),
            eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger)
        let signals = await ShutdownSignals.trap()
        let exporter = try metrics.startExporter(
            configuration: try metrics.exporterConfiguration(), source: BusMetricsSource(observer: observer),
            logger: logger)
        logger.info(
            "observing the replication bus",
            metadata: ["redis": "\(endpoint)", "channels": "\(serverName), \(serverName)/USER_IP"])
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: MetricsService(http: exporter, logger: logger)),
                    .init(service: BusObserverService(observer: observer)),
                ],
                logger: logger))
        try await signals.run(serviceGroup, logger: logger)
    }
}

func validateServerName(_ name: String) throws {
    guard !name.isEmpty, !name.contains(where: { $0.isNewline || $0 == " " }) else {
        throw ValidationError("--server-name must be one non-empty word")
    }
}
