import ArgumentParser
import Credentials
import Foundation
import MetricsExporter
import Logging
import NIOPosix
import NIOSSL
import RedisStreams
import ReplicationCore
import ReplicationMetrics
import ReplicationNIO
import ReplicationRelay
import ServiceLifecycle
import SidecarLogging
import SidecarMetrics
import StreamLog

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve Synapse's TCP replication protocol to workers.",
        discussion: """
            Listens for worker connections, serves catch-up from the stream log and fans new rows out to \
            every subscribed worker. Rows enter through connections whose NAME is listed with --writer, \
            and through INVALIDATE_CACHE / REMOVE_PUSHER from any worker. With --upstream it is a relay \
            instead: rows come from one upstream connection (a hub, another relay or Synapse itself), and \
            workers' commands go there. SIGTERM or SIGINT sends 'ERROR server shutting down' to every \
            connection and exits 0. Every flag can also be set in the environment as \
            REPLICATION_SIDECAR_<FLAG> (capitals, '-' and '.' as '_'; a repeatable flag comma-separated); \
            a flag on the command line wins.
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

    @Option(
        help: """
            File of NAME:HASH lines (bcrypt, as 'htpasswd -nB NAME' prints): writers that must send \
            'AUTH <secret>' after NAME before they may publish.
            """)
    var writerCredentials: String?

    @Option(help: "Port of a second replication listener that speaks TLS (needs --tls-cert and --tls-key).")
    var tlsPort: Int?

    @Option(help: "PEM certificate (chain) of the TLS listener.")
    var tlsCert: String?

    @Option(help: "PEM private key of the TLS listener.")
    var tlsKey: String?

    @Option(help: "PEM CA file: TLS clients must present a certificate it signed.")
    var tlsClientCA: String?

    @Option(
        name: .customLong("allow-from"),
        help: "Peers that may connect, as CIDR (10.0.0.0/8, fd00::/8) or one address (repeatable); default: anyone.")
    var allowFrom: [String] = []

    @Option(help: "Replication connections served at once; more are closed at accept (default: no limit).")
    var maxConnections: Int?

    @Option(help: "INVALIDATE_CACHE/REMOVE_PUSHER one connection may send per second (bursts of 10 s' worth).")
    var maxHubRowsPerSecond = 100

    @Option(help: "HOST:PORT of an upstream replication server: run as a relay, storing and serving what it sends.")
    var upstream: Endpoint?

    @Option(help: "The SERVER name the upstream must announce (required with --upstream).")
    var upstreamServerName: String?

    @Flag(help: "Connect to the upstream over TLS (its --tls-port).")
    var upstreamTLS = false

    @Option(help: "PEM file of the CA that signed the upstream's certificate (default: the system's roots).")
    var upstreamCA: String?

    @Option(help: "PEM client certificate for an upstream that requires one (needs --upstream-key).")
    var upstreamCert: String?

    @Option(help: "PEM private key of --upstream-cert.")
    var upstreamKey: String?

    @Option(help: "The NAME this relay gives upstream.")
    var upstreamClientName = "replication-sidecar-relay"

    @OptionGroup var redis: RedisOptions

    @Option(
        help: """
            With --redis: prefix of the stream keys (default: replication-sidecar:{<server-name>}:). Sidecars with the \
            same Redis and prefix are one hub.
            """)
    var redisPrefix: String?

    @Option(help: "With --redis: seconds a writer's rows wait for an unreachable Redis before the writer is refused.")
    var redisWriteTimeout: Double = 5

    @Option(help: "With --redis: Redis replicas that must confirm a writer's batch (WAIT) before it is acknowledged.")
    var redisWaitReplicas = 0

    @Option(help: "Directory of the durable stream log (created if missing).")
    var dataDir = "./replication-data"

    @Option(help: "Durability of an acknowledged row: 'full' (fsync per commit, survives power loss) or 'normal' (survives a process crash).")
    var sync = "full"

    @Flag(help: "Keep the stream log in memory only (lost on restart).")
    var inMemory = false

    @Option(help: "Rows kept per stream at least; a REPLICATE from before the kept rows has fallen behind.")
    var retainRows = 1_000_000

    @Option(help: "Also keep rows younger than this (e.g. 90s, 30m, 24h, 7d); default: no age bound.")
    var retainAge: String?

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

    @Option(help: "How far above a stream's current token a writer's batch or POSITION may go.")
    var maxTokenStep: Int64 = ProtocolConfiguration().maxTokenStep

    @Option(help: "SO_SNDBUF in bytes for worker connections (default: the kernel's autotuning).")
    var socketSendBuffer: Int?

    @OptionGroup var metrics: MetricsOptions

    @OptionGroup var logging: LogOptions

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535, got \(port)") }
        guard !serverName.isEmpty, !serverName.contains(where: \.isNewline) else {
            throw ValidationError("--server-name must be a non-empty single line")
        }
        for writer in writers where writer.isEmpty || writer.contains(where: \.isNewline) {
            throw ValidationError("--writer must be a non-empty client name, got '\(writer)'")
        }
        if upstream != nil {
            guard let upstreamServerName, !upstreamServerName.isEmpty, !upstreamServerName.contains(where: \.isNewline) else {
                throw ValidationError("--upstream needs --upstream-server-name: the SERVER name the upstream announces")
            }
            guard writers.isEmpty else {
                throw ValidationError("--writer cannot be used with --upstream: a relay's rows come from its upstream only")
            }
            guard writerCredentials == nil else {
                throw ValidationError(
                    "--writer-credentials cannot be used with --upstream: a relay's rows come from its upstream only")
            }
        } else if upstreamServerName != nil {
            throw ValidationError("--upstream-server-name needs --upstream HOST:PORT")
        }
        if redis.redis != nil {
            guard upstream == nil else {
                throw ValidationError(
                    "--redis cannot be used with --upstream: a relay's rows come from its upstream only")
            }
            guard redisWriteTimeout > 0 else {
                throw ValidationError(
                    "--redis-write-timeout must be a positive number of seconds, got \(redisWriteTimeout)")
            }
            guard redisWaitReplicas >= 0 else {
                throw ValidationError("--redis-wait-replicas must be 0 or more, got \(redisWaitReplicas)")
            }
        } else if redisPrefix != nil || redisWaitReplicas != 0 {
            throw ValidationError("--redis-prefix and --redis-wait-replicas need --redis URL")
        }
        if let redisPrefix, redisPrefix.isEmpty || redisPrefix.contains(where: \.isWhitespace) {
            throw ValidationError("--redis-prefix must be non-empty, without spaces")
        }
        guard !upstreamClientName.isEmpty, !upstreamClientName.contains(where: { $0.isNewline || $0 == " " }) else {
            throw ValidationError("--upstream-client-name must be one word")
        }
        guard retainRows > 0 else { throw ValidationError("--retain-rows must be at least 1, got \(retainRows)") }
        guard SQLiteStreamLog.SyncMode(rawValue: sync) != nil else {
            throw ValidationError("--sync must be 'full' or 'normal', got '\(sync)'")
        }
        if let retainAge, parseDuration(retainAge) == nil {
            throw ValidationError("--retain-age must be a number with s, m, h or d (e.g. 24h), got '\(retainAge)'")
        }
        guard maxLineLength >= 64 else {
            throw ValidationError("--max-line-length must be at least 64 bytes, got \(maxLineLength)")
        }
        guard maxPendingCommands > 0 else {
            throw ValidationError("--max-pending-commands must be at least 1, got \(maxPendingCommands)")
        }
        guard pingIntervalMs > 0, pingTimeoutMs > 0 else {
            throw ValidationError("--ping-interval-ms and --ping-timeout-ms must be positive")
        }
        // Synapse's workers ping every 5 s whatever this server's interval is.
        guard pingTimeoutMs > 5_000 else {
            throw ValidationError(
                "--ping-timeout-ms must be above 5000: Synapse workers ping every 5 s, so a shorter timeout closes "
                    + "healthy workers, got \(pingTimeoutMs)")
        }
        if let tlsPort {
            guard (0...65535).contains(tlsPort) else {
                throw ValidationError("--tls-port must be between 0 and 65535, got \(tlsPort)")
            }
            guard tlsCert != nil, tlsKey != nil else { throw ValidationError("--tls-port needs --tls-cert and --tls-key") }
        } else if tlsCert != nil || tlsKey != nil || tlsClientCA != nil {
            throw ValidationError("--tls-cert, --tls-key and --tls-client-ca need --tls-port")
        }
        if !upstreamTLS, upstreamCA != nil || upstreamCert != nil || upstreamKey != nil {
            throw ValidationError("--upstream-ca, --upstream-cert and --upstream-key need --upstream-tls")
        }
        guard (upstreamCert == nil) == (upstreamKey == nil) else {
            throw ValidationError("--upstream-cert and --upstream-key go together")
        }
        if upstreamTLS, upstream == nil { throw ValidationError("--upstream-tls needs --upstream HOST:PORT") }
        for range in allowFrom where AddressRange(range) == nil {
            throw ValidationError("--allow-from must be an address or CIDR range such as 10.0.0.0/8, got '\(range)'")
        }
        if let maxConnections, maxConnections < 1 {
            throw ValidationError("--max-connections must be at least 1, got \(maxConnections)")
        }
        guard maxHubRowsPerSecond > 0 else {
            throw ValidationError("--max-hub-rows-per-second must be at least 1, got \(maxHubRowsPerSecond)")
        }
        guard maxBatchRows > 0 else { throw ValidationError("--max-batch-rows must be at least 1, got \(maxBatchRows)") }
        guard maxTokenStep > 0 else {
            throw ValidationError("--max-token-step must be at least 1, got \(maxTokenStep)")
        }
        if let socketSendBuffer, socketSendBuffer < 1024 {
            throw ValidationError("--socket-send-buffer must be at least 1024 bytes, got \(socketSendBuffer)")
        }
    }

    func run() async throws {
        // A worker or scraper that goes away mid-write is an error on that connection, not a reason to die.
        signal(SIGPIPE, SIG_IGN)
        let logger = logging.bootstrap()
        let configuration = ServerConfiguration(
            host: host, port: port, serverName: serverName, writers: Set(writers),
            writerCredentials: try loadWriterCredentials(),
            tls: try tlsListener(), allowFrom: allowFrom.compactMap(AddressRange.init), maxConnections: maxConnections,
            protocolLimits: ProtocolConfiguration(
                maxLineLength: maxLineLength, maxPendingCommands: maxPendingCommands,
                pingIntervalMillis: pingIntervalMs, pingTimeoutMillis: pingTimeoutMs, maxBatchRows: maxBatchRows,
                hubRowsPerSecond: maxHubRowsPerSecond, maxTokenStep: maxTokenStep),
            socketSendBuffer: socketSendBuffer)
        let metricsConfiguration = try metrics.exporterConfiguration()
        let log: any StreamLog
        // Commits get a thread of their own, so that page reads on the shared pool never delay an
        // acknowledgement; stopped after the log is closed.
        let commitThread = NIOThreadPool(numberOfThreads: 1)
        if inMemory {
            log = InMemoryStreamLog(retainRows: retainRows)
        } else {
            do {
                log = try SQLiteStreamLog(
                    directory: dataDir, sync: SQLiteStreamLog.SyncMode(rawValue: sync)!,
                    retention: .init(rows: retainRows, ageMillis: retainAge.flatMap(parseDuration)),
                    commitPool: commitThread, clock: { ConnectionClock.system.wallMillis })
            } catch {
                logger.critical("\(error)")
                throw ExitCode.failure
            }
            commitThread.start()
            logger.info("stream log ready", metadata: ["path": "\(dataDir)", "sync": "\(sync)"])
        }
        let group = MultiThreadedEventLoopGroup.singleton
        let upstreamTLSContext = try upstreamTLS ? upstreamContext() : nil
        let link = upstream.map { upstream in
            UpstreamLink(
                configuration: RelayConfiguration(
                    host: upstream.host, port: upstream.port, upstreamServerName: upstreamServerName!,
                    clientName: upstreamClientName, protocolLimits: configuration.protocolLimits, tls: upstreamTLSContext),
                eventLoop: group.next(), logger: logger)
        }
        // The shared streams get a thread of their own: on the group's they shared a loop with a writer's
        // connection (every row read, checked, published and read back on one thread) or with the fan-out
        // to half the workers, and each waited for the other.
        let sharedThread = redis.redis.map { _ in MultiThreadedEventLoopGroup(numberOfThreads: 1) }
        let shared = try sharedThread.map { sharedThread in
            var redisConfiguration = RedisStreamsConfiguration(
                endpoint: try redis.endpoint(),
                entries: StreamEntries(prefix: redisPrefix ?? StreamEntries.defaultPrefix(serverName: serverName)),
                writeTimeout: .nanoseconds(Int64(redisWriteTimeout * 1e9)), keepRows: retainRows)
            redisConfiguration.waitReplicas = redisWaitReplicas
            redisConfiguration.keepAge = retainAge.flatMap(parseDuration).map { .milliseconds($0) }
            return RedisSharedStreams(
                configuration: redisConfiguration,
                eventLoop: sharedThread.next(), latencyBuckets: SharedStreamsFigures.commandBuckets, logger: logger)
        }
        let server = ReplicationServer(
            configuration: configuration, log: log, group: group, upstream: link, shared: shared, logger: logger)
        link?.attach(to: server.hub)
        shared?.start(storingInto: server.hub)
        var upstreamStatus: (@Sendable () -> UpstreamStatus)?
        if let link { upstreamStatus = { link.currentStatus } }
        var sharedFamilies: (@Sendable () -> [FamilySamples])?
        var sharedConnected: (@Sendable () -> Bool)?
        if let shared {
            sharedFamilies = { shared.metricFamilies(log: log) }
            sharedConnected = { shared.currentStatistics.isConnected }
        }
        // Trapped before either listener says it is ready: a signal from then on shuts down gracefully.
        let signals = await ShutdownSignals.trap()
        let exporter: MetricsHTTPServer
        do {
            exporter = try metrics.startExporter(
                configuration: metricsConfiguration,
                source: HubMetricsSource(
                    server: server, upstream: upstreamStatus,
                    upstreamAddress: upstream.map { "\($0.host):\($0.port)" } ?? "",
                    moreFamilies: sharedFamilies, sharedStreamsConnected: sharedConnected),
                logger: logger)
        } catch {
            try? await commitThread.shutdownGracefully()
            throw error
        }
        do {
            try await server.start()
        } catch {
            try? await commitThread.shutdownGracefully()
            exporter.stop()
            logger.critical("cannot listen on \(host):\(port): \(error)")
            throw ExitCode.failure
        }
        // Services stop in reverse order: the replication listener first (workers hear why), then the
        // upstream connection, the metrics endpoint, and the log last (once nothing appends any more).
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: StreamLogService(log: log, commitThread: commitThread)),
            .init(service: MetricsService(http: exporter, logger: logger)),
        ]
        if let link { services.append(.init(service: link)) }
        if let shared, let sharedThread {
            services.append(.init(service: SharedStreamsService(shared: shared, thread: sharedThread)))
        }
        services.append(.init(service: server))
        // Both listeners are up: under systemd (Type=notify) the unit becomes active once the group runs.
        services.append(.init(service: SystemdNotifications(notifier: SystemdNotifier(), logger: logger)))
        try await signals.run(ServiceGroup(configuration: .init(services: services, logger: logger)), logger: logger)
    }

    private func tlsListener() throws -> (port: Int, context: NIOSSLContext)? {
        guard let tlsPort, let tlsCert, let tlsKey else { return nil }
        do {
            return (tlsPort, try TransportSecurity.serverContext(certificate: tlsCert, key: tlsKey, clientCA: tlsClientCA))
        } catch {
            throw ValidationError("--tls-cert/--tls-key: \(error)")
        }
    }

    private func upstreamContext() throws -> NIOSSLContext {
        do {
            return try TransportSecurity.clientContext(ca: upstreamCA, certificate: upstreamCert, key: upstreamKey)
        } catch {
            throw ValidationError("--upstream-tls: \(error)")
        }
    }

    /// The writers' hashes; a writer named both here and with --writer would skip its AUTH, so that is refused.
    private func loadWriterCredentials() throws -> CredentialsFile? {
        guard let writerCredentials else { return nil }
        let credentials: CredentialsFile
        do {
            credentials = try CredentialsFile(contentsOf: writerCredentials)
        } catch {
            throw ValidationError("--writer-credentials: \(error)")
        }
        if let both = writers.first(where: { credentials.hashes[$0] != nil }) {
            throw ValidationError("\(both) is given with --writer and in --writer-credentials: a writer with a hash must AUTH")
        }
        return credentials
    }
}

/// Closes the log on graceful shutdown, after the services that append to it have stopped.
struct StreamLogService: Service {
    let log: any StreamLog
    let commitThread: NIOThreadPool

    func run() async throws {
        try? await gracefulShutdown()
        await log.close()
        try await commitThread.shutdownGracefully()
    }
}

/// Stops following Redis on graceful shutdown, after the replication listener (workers have gone).
struct SharedStreamsService: Service {
    let shared: RedisSharedStreams
    let thread: MultiThreadedEventLoopGroup

    func run() async throws {
        try? await gracefulShutdown()
        try await shared.stop().get()
        try await thread.shutdownGracefully()
    }
}

/// Milliseconds in a duration such as `90s`, `30m`, `24h` or `7d`.
func parseDuration(_ text: String) -> Int64? {
    guard let unit = text.last, let amount = Int64(text.dropLast()), amount > 0 else { return nil }
    switch unit {
    case "s": return amount * 1_000
    case "m": return amount * 60_000
    case "h": return amount * 3_600_000
    case "d": return amount * 86_400_000
    default: return nil
    }
}
