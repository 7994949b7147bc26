import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOConcurrencyHelpers
import NIOPosix
import ReplicationCore
import ReplicationNIO

struct Tail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Follow streams as a worker would, printing each row as one JSON line.",
        discussion: """
            With --connect: prints {"stream": …, "token": …, "row": …} per row on stdout (the format 'publish' \
            reads), status on stderr. Reconnects with back-off when the connection is lost, resuming after the \
            last token printed, so a server restart leaves no gap and no duplicate. Exits 1 with the server's \
            ERROR text when the server refuses it (other than for its own shutdown).

            With --redis: prints what today's Synapse publishes on its Redis bus, {"stream": …, "instance": …, \
            "token": …, "row": …} per row (batch rows with the token that closes them), and with --commands every \
            other command as {"command": …, "arguments": …} and messages it cannot parse as {"malformed": …, \
            "message": …}. It only listens; it stops on SIGTERM or SIGINT.
            """)

    @Option(help: "HOST:PORT of the replication server (TCP protocol).")
    var connect: Endpoint?

    @OptionGroup var redis: RedisOptions

    @Flag(help: "With --redis: print commands other than RDATA, and malformed messages, too.")
    var commands = false

    @Option(help: "The server name to expect in SERVER.")
    var serverName = "localhost"

    @Option(help: "Comma-separated streams to follow, or ALL (default: events with --connect, ALL with --redis).")
    var streams: String?

    @Option(help: "Start after this token, or NOW for new rows only.")
    var from = "NOW"

    @Option(help: "The NAME this client gives the server.")
    var name = "replication-sidecar-tail"

    @OptionGroup var transport: ClientTLSOptions

    func validate() throws {
        guard (connect == nil) != (redis.redis == nil) else {
            throw ValidationError("give either --connect HOST:PORT (TCP replication) or --redis URL (Synapse's Redis bus)")
        }
        if redis.redis != nil {
            try validateServerName(serverName)
            guard from == "NOW", name == "replication-sidecar-tail" else {
                throw ValidationError("--from and --name apply to --connect only: the Redis bus has no catch-up and no names")
            }
            return
        }
        guard !commands else { throw ValidationError("--commands needs --redis") }
        _ = try parseStreams(streams ?? "events")
        guard from == "NOW" || Int64(from) != nil else {
            throw ValidationError("--from must be NOW or a token (a whole number), got '\(from)'")
        }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        guard let connect else {
            let streams = streams.flatMap { $0 == "ALL" || $0 == "all" ? nil : Set($0.split(separator: ",").map(String.init)) }
            try await tailBus(endpoint: try redis.endpoint(), serverName: serverName, streams: streams, commands: commands)
            return
        }
        let start: ReplicateFrom = Int64(from).map { .token($0) } ?? .now
        let configuration = ClientConfiguration(
            host: connect.host, port: connect.port, clientName: name, expectedServerName: serverName,
            subscriptions: try parseStreams(streams ?? "events").map { ($0, start) }, tls: try transport.context())
        let status = try await runClient(configuration) { _, finish in TailPrinter(finish: finish) }
        throw ExitCode(status)
    }
}

/// A delegate that drives its client (``Publisher`` sends through it).
protocol ClientDriver: ReplicationClientDelegate {
    func attach(_ client: ReplicationClient)
}

/// Runs a client on one event loop until its delegate calls `finish` with an exit status.
func runClient(
    _ configuration: ClientConfiguration,
    makeDelegate: @escaping @Sendable (any EventLoop, @escaping @Sendable (Int32) -> Void) -> any ClientDriver
) async throws -> Int32 {
    let loop = MultiThreadedEventLoopGroup.singleton.next()
    let finished = loop.makePromise(of: Int32.self)
    try await loop.submit {
        var logger = Logger(label: "replication-sidecar")
        logger.logLevel = .error
        let delegate = makeDelegate(loop) { status in finished.succeed(status) }
        let client = ReplicationClient(configuration: configuration, eventLoop: loop, delegate: delegate, logger: logger)
        delegate.attach(client)
        client.start()
        // Both live until the command finishes.
        let running = NIOLoopBound((client, delegate), eventLoop: loop)
        finished.futureResult.whenComplete { _ in running.value.0.stop() }
    }.get()
    return try await finished.futureResult.get()
}

/// Writes rows as JSON lines; decides when `tail` must give up.
final class TailPrinter: ClientDriver {
    private let finish: (Int32) -> Void

    init(finish: @escaping (Int32) -> Void) { self.finish = finish }

    func attach(_ client: ReplicationClient) {}

    func replicationClient(received rows: [String], stream: StreamName, token: Int64) {
        var out = ""
        for row in rows { out += "{\"stream\": \"\(stream)\", \"token\": \(token), \"row\": \(row)}\n" }
        FileHandle.standardOutput.write(Data(out.utf8))
    }

    func replicationClient(position token: Int64, stream: StreamName) {}

    func replicationClientFinishedConnecting() { status("caught up on every stream; following") }

    func replicationClient(serverError text: String) {
        if RemoteError(text) == .serverShuttingDown {
            status("the server is shutting down; will reconnect")
        } else {
            status("the server refused: \(text)")
            finish(1)
        }
    }

    func replicationClient(badRow reason: String, stream: String) { status("dropped a bad \(stream) row: \(reason)") }

    func replicationClient(closingWithError text: String) {
        status("giving up: \(text)")
        finish(1)
    }

    func replicationClient(connected: Bool, retryInMillis: Int64?) {
        if connected {
            status("connected")
        } else if let retryInMillis {
            status("connection lost; reconnecting in \(retryInMillis) ms")
        } else {
            status("connection lost")
            finish(1)
        }
    }
}

func status(_ text: String) {
    FileHandle.standardError.write(Data("replication-sidecar: \(text)\n".utf8))
}
