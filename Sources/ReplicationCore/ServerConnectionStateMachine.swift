/// The server's side of one replication connection, as a value: each event returns what to do, and the
/// channel handler only performs it.
///
/// On top of the shared ``ConnectionStateMachine`` it owns the greeting, the connection's name and
/// whether that name may write. Stream rows do not pass through here: a subscription is a cursor into
/// the log, so rows are never queued per connection; only their count is reported
/// (``rowsWritten(_:now:)``).
public struct ServerConnectionStateMachine: Sendable {
    public typealias State = ConnectionStateMachine.State
    public typealias Outbound = ConnectionStateMachine.Outbound
    public typealias Inbound = ConnectionStateMachine.Inbound
    public typealias Ending = ConnectionStateMachine.Ending

    public private(set) var connection: ConnectionStateMachine
    /// The name the client gave with `NAME`; `anon` until then.
    public private(set) var name = "anon"
    public private(set) var isWriter = false

    private let serverName: String
    private let writers: Set<String>

    public init(serverName: String, writers: Set<String>, configuration: ProtocolConfiguration, now: Int64) {
        self.serverName = serverName
        self.writers = writers
        self.connection = ConnectionStateMachine(configuration: configuration, now: now)
    }

    public var state: State { connection.state }
    public var counters: CommandCounters { connection.counters }
    public var keepalive: Keepalive { connection.keepalive }
    public var pendingCommands: [Command] { connection.pendingCommands }
    public var isEstablished: Bool { connection.isEstablished }

    /// The greeting: `SERVER` first, then a `PING` so that the client knows it may time us out.
    public mutating func connectionActive(now: Int64, wallMillis: Int64) -> [Command] {
        let greeting: [Command] = [.server(name: serverName), .ping(String(wallMillis))]
        for command in greeting { connection.recordSent(command.name, now: now) }
        return greeting
    }

    /// One line from the client, without its delimiter (and without a trailing CR).
    public mutating func lineReceived(_ line: Substring, now: Int64) -> Inbound {
        let isWriter = self.isWriter
        let inbound = connection.lineReceived(line, accepts: { Self.accepts($0, writer: isWriter) }, now: now)
        if case .dispatch(.name(let newName)) = inbound {
            name = newName
            self.isWriter = writers.contains(newName)
        }
        return inbound
    }

    /// Whether a writer's lines may be taken on their bytes (``WriterRowLine``) rather than through
    /// ``lineReceived(_:now:)``: the connection is a writer and not closing.
    public var takesWriterRows: Bool { isWriter && connection.isOpen }

    /// `count` `RDATA` lines were taken on their bytes while ``takesWriterRows``.
    public mutating func writerRowsReceived(_ count: Int, now: Int64) {
        _ = connection.commandReceived(.RDATA, count: count, now: now)
    }

    /// A line that could not be read as text, or that was too long.
    public mutating func lineRejected(_ error: ClosingError, now: Int64) -> Outbound { connection.fail(error, now: now) }
    public mutating func send(_ command: Command, now: Int64) -> Outbound { connection.send(command, now: now) }
    public mutating func fail(_ error: ClosingError, now: Int64) -> Outbound { connection.fail(error, now: now) }
    public mutating func tick(now: Int64, wallMillis: Int64) -> Outbound {
        connection.tick(now: now, wallMillis: wallMillis)
    }
    public mutating func connectionClosed(_ ending: Ending) -> CloseReason { connection.connectionClosed(ending) }
    public mutating func excuseSilence(now: Int64) { connection.excuseSilence(now: now) }
    public var isOpen: Bool { connection.isOpen }

    public mutating func writabilityChanged(isWritable: Bool, now: Int64) -> [Command] {
        connection.writabilityChanged(isWritable: isWritable, now: now)
    }

    /// `count` commands the caller wrote itself while the connection took writes.
    public mutating func recordSent(_ command: CommandName, count: Int, now: Int64) {
        connection.recordSent(command, count: count, now: now)
    }

    /// `count` stream rows were written straight from the log.
    public mutating func rowsWritten(_ count: Int, now: Int64) {
        recordSent(.RDATA, count: count, now: now)
    }

    private static func accepts(_ command: CommandName, writer: Bool) -> Bool {
        CommandName.sentByClients.contains(command) || (writer && CommandName.sentByWritersOnly.contains(command))
    }
}
