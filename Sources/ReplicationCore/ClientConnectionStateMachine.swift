/// The client's side of one replication connection, as a value.
///
/// On connect it sends `NAME`, `PING`, one `REPLICATE` per stream and `USER_SYNC … start` per syncing
/// user. It checks the server's name, buffers `batch` rows per stream until the row with the numeric
/// token that closes them, validates rows against their stream's shape (a bad row is reported, the
/// connection stays), and reports when every requested stream has answered with `POSITION`.
public struct ClientConnectionStateMachine: Sendable {
    public typealias Outbound = ConnectionStateMachine.Outbound

    /// What the client handler acts on.
    public enum Event: Equatable, Sendable {
        /// Rows of one token (a whole batch), in order.
        case rows(StreamName, token: Int64, rows: [String])
        case position(StreamName, token: Int64)
        /// Every requested stream has answered with `POSITION`.
        case finishedConnecting
        case remoteError(String)
        case sync(String)
        /// A row that does not fit its stream's shape; it is dropped and counted.
        case badRow(stream: String, reason: String)
        case reply(Outbound)
    }

    public private(set) var connection: ConnectionStateMachine
    /// `RDATA` lines received per stream (by ``StreamName/index``), valid or not.
    public private(set) var rdataReceived = [Int](repeating: 0, count: StreamName.all.count)
    /// Rows dropped because they did not fit their stream's shape.
    public private(set) var badRows = 0
    private var batches = [[String]](repeating: [], count: StreamName.all.count)
    private var connecting: Set<StreamName>
    private var finished = false
    private let clientName: String
    /// A writer's secret, sent with `AUTH` right after `NAME`.
    private let secret: String?
    private let expectedServerName: String
    private let subscriptions: [(StreamName, ReplicateFrom)]
    private let syncingUsers: [String]

    public init(
        clientName: String, secret: String? = nil, expectedServerName: String,
        subscriptions: [(StreamName, ReplicateFrom)], syncingUsers: [String], configuration: ProtocolConfiguration,
        now: Int64
    ) {
        self.clientName = clientName
        self.secret = secret
        self.expectedServerName = expectedServerName
        self.subscriptions = subscriptions
        self.syncingUsers = syncingUsers
        self.connecting = Set(subscriptions.map(\.0))
        self.connection = ConnectionStateMachine(configuration: configuration, now: now)
    }

    public var isEstablished: Bool { connection.isEstablished }

    /// What a new connection sends first. When nothing is subscribed it has finished connecting at once.
    public mutating func connectionActive(now: Int64, wallMillis: Int64) -> (commands: [Command], finishedConnecting: Bool) {
        var commands: [Command] = [.name(clientName)]
        if let secret { commands.append(.auth(secret: secret)) }
        commands.append(.ping(String(wallMillis)))
        commands += subscriptions.map { .replicate(stream: $0.0.rawValue, from: $0.1) }
        commands += syncingUsers.map { .userSync(userID: $0, state: .start, lastSyncMillis: wallMillis) }
        for command in commands { connection.recordSent(command.name, now: now) }
        if connecting.isEmpty { finished = true }
        return (commands, connecting.isEmpty)
    }

    public mutating func lineReceived(_ line: Substring, now: Int64) -> [Event] {
        switch connection.lineReceived(line, accepts: { CommandName.sentByServers.contains($0) }, now: now) {
        case .nothing: return []
        case .reply(let outbound): return [.reply(outbound)]
        case .dispatch(let command): return handle(command, now: now)
        }
    }

    private mutating func handle(_ command: Command, now: Int64) -> [Event] {
        switch command {
        case .server(let name):
            return name == expectedServerName ? [] : [.reply(connection.fail(.wrongRemote, now: now))]
        case .rdata(let name, let token, let row):
            guard let stream = StreamName(name) else {
                badRows += 1
                return [.badRow(stream: name, reason: "unknown stream")]
            }
            rdataReceived[stream.index] += 1
            guard row.fits(stream) else {
                badRows += 1
                return [.badRow(stream: name, reason: "a \(stream) row is a JSON array of \(stream.fieldCount) fields")]
            }
            batches[stream.index].append(row.text)
            guard case .value(let closing) = token else { return [] }
            let rows = batches[stream.index]
            batches[stream.index] = []
            return [.rows(stream, token: closing, rows: rows)]
        case .position(let name, let token):
            guard let stream = StreamName(name) else { return [] }
            var events: [Event] = [.position(stream, token: token)]
            connecting.remove(stream)
            if connecting.isEmpty && !finished {
                finished = true
                events.append(.finishedConnecting)
            }
            return events
        case .error(let text):
            return [.remoteError(text)]
        case .sync(let data):
            return [.sync(data)]
        default:
            // The machine only dispatches what a server may send.
            return []
        }
    }

    public mutating func send(_ command: Command, now: Int64) -> Outbound { connection.send(command, now: now) }
    public mutating func fail(_ error: ClosingError, now: Int64) -> Outbound { connection.fail(error, now: now) }
    public mutating func tick(now: Int64, wallMillis: Int64) -> Outbound {
        connection.tick(now: now, wallMillis: wallMillis)
    }
    public mutating func lineRejected(_ error: ClosingError, now: Int64) -> Outbound { connection.fail(error, now: now) }

    public mutating func writabilityChanged(isWritable: Bool, now: Int64) -> [Command] {
        connection.writabilityChanged(isWritable: isWritable, now: now)
    }

    public mutating func connectionClosed(_ ending: ConnectionStateMachine.Ending) -> CloseReason {
        connection.connectionClosed(ending)
    }
}
