import ArgumentParser
import Foundation
import Logging
import MetricsExporter
import NIOCore
import NIOPosix
import ReplicationCore
import ReplicationNIO
import ServiceLifecycle
import SidecarLogging
import SidecarMetrics
import StreamLog

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the sidecar with a synthetic writer and a few workers, so /metrics shows life at once.",
        discussion: """
            Starts the server (in-memory log), a writer publishing realistic rows on events, caches, receipts \
            and typing, and workers: two that keep up, one that reads only every few seconds (watch its \
            buffers and lag), and one that disconnects and reconnects every 20 s (watch its close reasons). \
            Stop it with Ctrl-C.
            """)

    @Option(help: "Port of the replication listener.")
    var port = 9092

    @Option(help: "Port of the metrics endpoint.")
    var metricsPort = ExporterConfiguration.defaultPort

    @Option(help: "Rows per second the writer publishes.")
    var rate = 200

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        LoggingSystem.bootstrap { LineLogHandler(label: $0, format: .logfmt, level: .info) }
        let logger = Logger(label: "replication-sidecar-demo")
        let group = MultiThreadedEventLoopGroup.singleton
        let server = ReplicationServer(
            configuration: ServerConfiguration(
                port: port, serverName: "demo.local", writers: ["demo-writer"], socketSendBuffer: 16_384),
            log: InMemoryStreamLog(retainRows: 1_000_000), group: group, logger: logger)
        let signals = await ShutdownSignals.trap()
        let exporter = MetricsHTTPServer(
            configuration: ExporterConfiguration(port: metricsPort), source: HubMetricsSource(server: server),
            logger: logger)
        let boundMetricsPort = try exporter.start()
        let address = try await server.start()
        let replicationPort = address.port!
        logger.info("demo running: metrics at http://127.0.0.1:\(boundMetricsPort)/metrics")
        let loop = group.next()
        let rate = self.rate
        let actorLogger = logger
        let actors = try await loop.submit {
            NIOLoopBound(DemoActors(port: replicationPort, rate: rate, loop: loop, logger: actorLogger), eventLoop: loop)
        }.get()
        let services = ServiceGroup(
            configuration: .init(
                services: [.init(service: MetricsService(http: exporter, logger: logger)), .init(service: server)],
                logger: logger))
        try await signals.run(services, logger: logger)
        try await loop.submit { actors.value.stop() }.get()
    }
}

/// The writer and the workers of the demo, all on one event loop.
final class DemoActors: ClientDriver {
    private let port: Int
    private let loop: any EventLoop
    private let logger: Logger
    private var writer: ReplicationClient!
    private var sender: ReplicationClient!
    private var others: [ReplicationClient] = []
    private var flaky: ReplicationClient?
    private var tasks: [RepeatedTask] = []
    private var slowChannel: (any Channel)?
    private var token: Int64 = 0

    init(port: Int, rate: Int, loop: any EventLoop, logger: Logger) {
        self.port = port
        self.loop = loop
        self.logger = logger
        writer = client("demo-writer", [])
        sender = client("synapse.app.federation_sender", [.events, .caches, .receipts])
        sender.send(.userSync(userID: "@alice:demo.local", state: .start, lastSyncMillis: 0))
        others.append(client("synapse.app.generic_worker", StreamName.all))
        flaky = client("synapse.app.flaky_worker", [.caches, .typing])
        let this = NIOLoopBound(self, eventLoop: loop)
        // Rows in ticks of 100 ms; every fifth token on events is a batch.
        let perTick = max(1, rate / 10)
        tasks.append(
            loop.scheduleRepeatedTask(initialDelay: .milliseconds(500), delay: .milliseconds(100)) { _ in
                this.value.publish(perTick)
            })
        // A worker that reads only every few seconds.
        ClientBootstrap(group: loop)
            .channelOption(.autoRead, value: false)
            .channelOption(.socketOption(.so_rcvbuf), value: 4096)
            .connect(host: "127.0.0.1", port: port)
            .whenSuccess { channel in
                this.value.slowChannel = channel
                channel.writeAndFlush(
                    ByteBuffer(string: "NAME synapse.app.slow_worker\nPING 1\nREPLICATE events NOW\n"), promise: nil)
            }
        tasks.append(
            loop.scheduleRepeatedTask(initialDelay: .seconds(3), delay: .seconds(3)) { _ in
                this.value.slowChannel?.read()
                this.value.slowChannel?.writeAndFlush(ByteBuffer(string: "PING 1\n"), promise: nil)
            })
        // A worker that comes and goes.
        tasks.append(
            loop.scheduleRepeatedTask(initialDelay: .seconds(20), delay: .seconds(20)) { _ in
                this.value.toggleFlaky()
            })
    }

    private func client(_ name: String, _ streams: [StreamName]) -> ReplicationClient {
        let configuration = ClientConfiguration(
            host: "127.0.0.1", port: port, clientName: name, expectedServerName: "demo.local",
            subscriptions: streams.map { ($0, .now) })
        let client = ReplicationClient(configuration: configuration, eventLoop: loop, delegate: self, logger: logger)
        client.start()
        return client
    }

    private func toggleFlaky() {
        if let flaky {
            flaky.stop()
            self.flaky = nil
        } else {
            flaky = client("synapse.app.flaky_worker", [.caches, .typing])
        }
    }

    private func publish(_ count: Int) {
        for index in 0..<count {
            token += 1
            let n = token
            let (stream, row): (StreamName, String)
            switch index % 4 {
            case 0: (stream, row) = (.events, #"["ev", ["$\#(n):demo.local", "!room\#(n % 7):demo.local", "m.room.message", null, null, null]]"#)
            case 1: (stream, row) = (.caches, #"["get_user_by_id", ["@user\#(n % 50):demo.local"], \#(n)]"#)
            case 2: (stream, row) = (.receipts, #"["!room\#(n % 7):demo.local", "m.read", "@user\#(n % 50):demo.local", "$\#(n):demo.local", {}]"#)
            default: (stream, row) = (.typing, #"["!room\#(n % 7):demo.local", ["@user\#(n % 50):demo.local"]]"#)
            }
            let rowToken: RowToken = stream == .events && n % 5 == 0 ? .batch : .value(n)
            writer.send(.rdata(stream: stream.rawValue, token: rowToken, row: try! RowJSON(validating: row)))
            if rowToken == .batch {  // close the batch with the next token's row
                token += 1
                writer.send(.rdata(stream: stream.rawValue, token: .value(token), row: try! RowJSON(validating: row)))
            }
        }
        sender.send(.federationAck(token: token))
    }

    func stop() {
        for task in tasks { task.cancel() }
        for client in [writer, sender, flaky].compactMap({ $0 }) + others { client.stop() }
        slowChannel?.close(promise: nil)
    }

    func attach(_ client: ReplicationClient) {}
    func replicationClient(received rows: [String], stream: StreamName, token: Int64) {}
    func replicationClient(position token: Int64, stream: StreamName) {}
    func replicationClientFinishedConnecting() {}
    func replicationClient(serverError text: String) {}
    func replicationClient(badRow reason: String, stream: String) {}
    func replicationClient(closingWithError text: String) {}
    func replicationClient(connected: Bool, retryInMillis: Int64?) {}
}
