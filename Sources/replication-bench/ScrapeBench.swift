import ArgumentParser
import Foundation
import Logging
import MetricsExporter
import ReplicationCore
import ReplicationMetrics
import NIOCore
import NIOPosix
import ReplicationNIO
import SidecarMetrics
import StreamLog

/// `/metrics` with many connected workers: latency percentiles, body size and scrapes per second over
/// one keep-alive connection, beside the same endpoint serving a prebuilt body of the same size (the
/// cost of HTTP alone), measured in the same run.
struct ScrapeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scrape", abstract: "Scrape latency and throughput with many connected workers.")

    @Option(help: "Idle worker connections to hold open.")
    var workers = 1_000

    @Option(help: "Scrapes to time (after 50 warm-up scrapes).")
    var scrapes = 2_000

    func run() async throws {
        raiseDescriptorLimit()
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let group = MultiThreadedEventLoopGroup.singleton
        let server = ReplicationServer(
            configuration: ServerConfiguration(host: "127.0.0.1", port: 0), log: InMemoryStreamLog(), group: group,
            logger: logger)
        let address = try await server.start()
        let workerChannels = try await connectWorkers(count: workers, port: address.port!, group: group)
        let live = HubMetricsSource(server: server)
        let sample = try live.scrape(openMetrics: false).body

        try printBreakdown(server: server)
        let collecting = try measure(source: live, maxBodyAge: 0)
        let defaults = try measure(source: live, maxBodyAge: ExporterConfiguration().maxBodyAgeSeconds)
        let floor = try measure(source: StaticSource(body: sample), maxBodyAge: 0)
        print("workers connected: \(workerChannels.count), response: \(sample.utf8.count) bytes")
        print(collecting.report(label: "live, collecting on every scrape (--metrics-max-age 0)"))
        print(defaults.report(label: "live, default --metrics-max-age \(ExporterConfiguration().maxBodyAgeSeconds) s"))
        print(floor.report(label: "prebuilt body (HTTP only)"))
        for (label, figures) in [("collecting", collecting), ("default", defaults)] {
            print(String(format: "ratio %@/prebuilt: p50 %.2fx, p99 %.2fx, throughput %.2fx", label,
                figures.p50 / floor.p50, figures.p99 / floor.p99, figures.perSecond / floor.perSecond))
        }
        for channel in workerChannels { try? await channel.close() }
        try await server.shutDown()
    }

    /// Where one scrape's time goes: snapshots (on the event loops), families, rendering, /proc.
    private func printBreakdown(server: ReplicationServer) throws {
        let rounds = 100
        var snapshotTime = 0.0, familyTime = 0.0, renderTime = 0.0, processTime = 0.0
        for _ in 0..<rounds {
            var start = Date()
            let connections = try server.hub.connectionTotals(on: MultiThreadedEventLoopGroup.singleton.next()).wait()
            snapshotTime += Date().timeIntervalSince(start)
            start = Date()
            let process = ProcessStatistics.current()
            processTime += Date().timeIntervalSince(start)
            let snapshot = MetricsSnapshot(
                connections: connections, counters: server.hub.countersSnapshot,
                headTokens: StreamName.all.map { server.hub.log.currentToken(of: $0) }, process: process,
                scrapes: ScrapeStatistics())
            start = Date()
            let families = Exposition.families(snapshot)
            familyTime += Date().timeIntervalSince(start)
            start = Date()
            _ = Exposition.render(families, as: .text)
            renderTime += Date().timeIntervalSince(start)
        }
        print(String(format: "per scrape: snapshots %.3f ms, /proc %.3f ms, families %.3f ms, render %.3f ms",
            snapshotTime * 1000 / Double(rounds), processTime * 1000 / Double(rounds),
            familyTime * 1000 / Double(rounds), renderTime * 1000 / Double(rounds)))
    }

    struct Figures {
        var p50: Double
        var p99: Double
        var perSecond: Double
        var bytes: Int

        func report(label: String) -> String {
            String(format: "%@: p50 %.3f ms, p99 %.3f ms, %.0f scrapes/s (keep-alive, one client), %d bytes",
                label, p50 * 1000, p99 * 1000, perSecond, bytes)
        }
    }

    private func measure(source: any MetricsSource, maxBodyAge: Double) throws -> Figures {
        let http = MetricsHTTPServer(
            configuration: ExporterConfiguration(host: "127.0.0.1", port: 0, maxBodyAgeSeconds: maxBodyAge), source: source)
        let port = try http.start()
        defer { http.stop() }
        let client = try BlockingHTTPClient(port: port)
        var bytes = 0
        for _ in 0..<50 { bytes = try client.get("/metrics") }
        var latencies: [Double] = []
        latencies.reserveCapacity(scrapes)
        let started = Date()
        for _ in 0..<scrapes {
            let begin = Date()
            _ = try client.get("/metrics")
            latencies.append(Date().timeIntervalSince(begin))
        }
        let elapsed = Date().timeIntervalSince(started)
        latencies.sort()
        return Figures(
            p50: latencies[latencies.count / 2], p99: latencies[latencies.count * 99 / 100],
            perSecond: Double(scrapes) / elapsed, bytes: bytes)
    }

    private func connectWorkers(count: Int, port: Int, group: any EventLoopGroup) async throws -> [any Channel] {
        var channels: [any Channel] = []
        for index in 0..<count {
            let channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Discard()) } }
                .connect(host: "127.0.0.1", port: port).get()
            let lines = "NAME worker-\(index % 100)\nREPLICATE events NOW\nREPLICATE caches NOW\n"
            try await channel.writeAndFlush(ByteBuffer(string: lines)).get()
            channels.append(channel)
        }
        return channels
    }
}

/// Reads and drops what the server sends an idle worker.
private final class Discard: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// The same endpoint with a fixed body: what serving HTTP costs without collecting or rendering.
private struct StaticSource: MetricsSource {
    let body: String
    func scrape(openMetrics: Bool) throws -> (body: String, contentType: String) {
        (body, "text/plain; version=0.0.4; charset=utf-8")
    }
    func scrapeFinished(seconds: Double, failed: Bool) {}
    func slowClientClosed() {}
    var isHealthy: Bool { true }
    var isReady: Bool { true }
    func statusPage(telemetryPath: String) -> String { "" }
}
