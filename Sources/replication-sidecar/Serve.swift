import ArgumentParser
import Logging
import NIOPosix
import ReplicationCore
import ReplicationNIO
import ServiceLifecycle
import StreamLog

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve Synapse's TCP replication protocol to workers.",
        discussion: """
            Listens for worker connections, serves catch-up from the stream log and fans new rows out to \
            every subscribed worker. Rows enter through connections whose NAME is listed with --writer, \
            and through INVALIDATE_CACHE / REMOVE_PUSHER from any worker. SIGTERM or SIGINT sends \
            'ERROR server shutting down' to every connection and exits 0.
            """
    )

    @Option(help: "Address the replication listener binds to.")
    var host = "127.0.0.1"

    @Option(help: "Port of the replication listener; 0 picks a free port and logs it.")
    var port = 9092

    @Option(help: "Server name sent in SERVER; workers check it against the name they expect.")
    var serverName = "localhost"

    @Option(name: .customLong("writer"), help: "A client NAME allowed to publish rows with RDATA/POSITION (repeatable).")
    var writers: [String] = []

    @Option(help: "Rows kept per stream in the in-memory log; a REPLICATE from before them has fallen behind.")
    var retainRows = 100_000

    @Option(help: "Longest protocol line in bytes, in both directions.")
    var maxLineLength = 16384

    @Option(help: "Commands queued for a paused connection before it is closed with 'Failed to keep up'.")
    var maxPendingCommands = 10_000

    @Option(help: "Milliseconds of silence before a side sends PING.")
    var pingIntervalMs: Int64 = 5_000

    @Option(help: "Milliseconds without a command from a peer that has pinged before it is timed out.")
    var pingTimeoutMs: Int64 = 25_000

    @Option(help: "Rows a writer may hold in one unfinished batch.")
    var maxBatchRows = 10_000

    @Option(help: "SO_SNDBUF in bytes for worker connections (default: the kernel's autotuning).")
    var socketSendBuffer: Int?

    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535, got \(port)") }
        guard !serverName.isEmpty, !serverName.contains(where: \.isNewline) else {
            throw ValidationError("--server-name must be a non-empty single line")
        }
        for writer in writers where writer.isEmpty || writer.contains(where: \.isNewline) {
            throw ValidationError("--writer must be a non-empty client name, got '\(writer)'")
        }
        guard retainRows > 0 else { throw ValidationError("--retain-rows must be at least 1, got \(retainRows)") }
        guard maxLineLength >= 64 else {
            throw ValidationError("--max-line-length must be at least 64 bytes, got \(maxLineLength)")
        }
        guard maxPendingCommands > 0 else {
            throw ValidationError("--max-pending-commands must be at least 1, got \(maxPendingCommands)")
        }
        guard pingIntervalMs > 0, pingTimeoutMs > 0 else {
            throw ValidationError("--ping-interval-ms and --ping-timeout-ms must be positive")
        }
        guard maxBatchRows > 0 else { throw ValidationError("--max-batch-rows must be at least 1, got \(maxBatchRows)") }
        if let socketSendBuffer, socketSendBuffer < 1024 {
            throw ValidationError("--socket-send-buffer must be at least 1024 bytes, got \(socketSendBuffer)")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "replication-sidecar")
        let configuration = ServerConfiguration(
            host: host, port: port, serverName: serverName, writers: Set(writers),
            protocolLimits: ProtocolConfiguration(
                maxLineLength: maxLineLength, maxPendingCommands: maxPendingCommands,
                pingIntervalMillis: pingIntervalMs, pingTimeoutMillis: pingTimeoutMs, maxBatchRows: maxBatchRows),
            socketSendBuffer: socketSendBuffer)
        let server = ReplicationServer(
            configuration: configuration, log: InMemoryStreamLog(retainRows: retainRows),
            group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        do {
            try await server.start()
        } catch {
            logger.critical("cannot listen on \(host):\(port): \(error)")
            throw ExitCode.failure
        }
        let services = ServiceGroup(
            configuration: .init(
                services: [.init(service: server)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await services.run()
    }
}
