/// The server's side of one replication connection, as a value: each event returns what to do, and the
/// channel handler only performs it.
///
/// On top of the shared ``ConnectionStateMachine`` it owns the greeting, the connection's name and
/// whether that name may write: a writer is known by the first `NAME` alone, and one listed with
/// credentials writes only once its `AUTH` has been verified. Stream rows do not pass through here: a subscription is a cursor into
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
    /// The first name given, which alone decides whether the connection may write: renaming itself
    /// later changes how it is shown, never what it may do.
    public private(set) var identity: String?
    public private(set) var authentication = Authentication.notNeeded

    /// Where a writer that must prove itself with `AUTH` stands.
    public enum Authentication: Sendable, Equatable {
        /// Not a writer with credentials (or not named yet).
        case notNeeded
        /// Named as a writer with credentials; may not write until it sends `AUTH`.
        case awaitingSecret
        /// `AUTH` arrived and is being verified.
        case verifying
        /// Verified: the connection writes as ``identity``.
        case verified
        /// Its verified TLS client certificate names it: it writes without `AUTH` (one sent anyway is
        /// checked like any other).
        case certified
    }

    private let serverName: String
    private let writers: Set<String>
    private let writersWithCredentials: Set<String>
    /// The common name of the peer's verified TLS client certificate, if it presented one.
    private var certifiedName: String?

    /// `writers` write as soon as they are named (for trusted networks); `writersWithCredentials` only
    /// after a verified `AUTH`.
    public init(
        serverName: String, writers: Set<String>, writersWithCredentials: Set<String> = [],
        configuration: ProtocolConfiguration, now: Int64
    ) {
        self.serverName = serverName
        self.writers = writers
        self.writersWithCredentials = writersWithCredentials
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
        // A writer waiting for its AUTH has its RDATA refused as not authorised, not as unknown.
        let mayWrite = isWriter || authentication != .notNeeded
        let inbound = connection.lineReceived(line, accepts: { Self.accepts($0, writer: mayWrite) }, now: now)
        guard case .dispatch(let command) = inbound else { return inbound }
        switch command {
        case .name(let newName):
            name = newName
            if identity == nil {
                identity = newName
                if writers.contains(newName) {
                    isWriter = true
                } else if writersWithCredentials.contains(newName), newName == certifiedName {
                    authentication = .certified
                    isWriter = true
                } else if writersWithCredentials.contains(newName) {
                    authentication = .awaitingSecret
                }
            }
        case .auth:
            guard authentication == .awaitingSecret || authentication == .certified else {
                return .reply(connection.fail(.unexpectedAuth, now: now))
            }
            authentication = .verifying
        case .rdata, .position:
            if !isWriter { return .reply(connection.fail(.notAuthorised(command.name), now: now)) }
        default:
            break
        }
        return inbound
    }

    /// The peer's TLS client certificate was verified against the client CA and names `commonName`: a
    /// writer listed with credentials under that name needs no `AUTH`. Known before any line arrives
    /// (the handshake comes first).
    public mutating func peerCertified(as commonName: String) {
        certifiedName = commonName
    }

    /// The secret of an `AUTH` was checked: a good one makes the connection a writer, a wrong one ends it.
    public mutating func authenticationVerified(_ succeeded: Bool, now: Int64) -> Outbound {
        guard authentication == .verifying, connection.isOpen else { return .nothing }
        guard succeeded else { return connection.fail(.authenticationFailed, now: now) }
        authentication = .verified
        isWriter = true
        return .nothing
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
        command == .AUTH || CommandName.sentByClients.contains(command)
            || (writer && CommandName.sentByWritersOnly.contains(command))
    }
}
