/// The names of the protocol's commands, as they appear first on a line.
public enum CommandName: String, CaseIterable, Sendable {
    case SERVER, RDATA, POSITION, ERROR, PING, SYNC
    case NAME, REPLICATE, USER_SYNC, FEDERATION_ACK, REMOVE_PUSHER, INVALIDATE_CACHE, USER_IP
    /// A writer's secret, when the server checks writers' credentials (this project's extension).
    case AUTH

    /// The workers' commands a relay forwards to its upstream.
    public static let forwardedUpstream: [CommandName] = [.USER_SYNC, .FEDERATION_ACK, .REMOVE_PUSHER, .INVALIDATE_CACHE, .USER_IP]

    /// Dense index for per-command counters kept in plain arrays, in `allCases` order. A switch, not a
    /// lookup: every command in and out is counted.
    public var index: Int {
        switch self {
        case .SERVER: 0
        case .RDATA: 1
        case .POSITION: 2
        case .ERROR: 3
        case .PING: 4
        case .SYNC: 5
        case .NAME: 6
        case .REPLICATE: 7
        case .USER_SYNC: 8
        case .FEDERATION_ACK: 9
        case .REMOVE_PUSHER: 10
        case .INVALIDATE_CACHE: 11
        case .USER_IP: 12
        case .AUTH: 13
        }
    }

    /// Commands a server may receive from an ordinary client (Synapse's `VALID_CLIENT_COMMANDS`).
    public static let sentByClients: Set<CommandName> = [
        .NAME, .REPLICATE, .PING, .USER_SYNC, .FEDERATION_ACK, .REMOVE_PUSHER, .INVALIDATE_CACHE, .USER_IP, .ERROR,
    ]
    /// Commands a client may receive from a server (Synapse's `VALID_SERVER_COMMANDS`).
    public static let sentByServers: Set<CommandName> = [.SERVER, .RDATA, .POSITION, .ERROR, .PING, .SYNC]
    /// What a writer may send besides the client commands (this project's extension).
    public static let sentByWritersOnly: Set<CommandName> = [.RDATA, .POSITION]
}

/// `USER_SYNC` says whether a user started or stopped syncing.
public enum UserSyncState: String, Sendable {
    case start, end
}

/// One command of the line protocol with its typed arguments, parsed once at the edge.
public enum Command: Equatable, Sendable {
    case server(name: String)
    case rdata(stream: String, token: RowToken, row: RowJSON)
    case position(stream: String, token: Int64)
    case error(String)
    case ping(String)
    case sync(String)
    case name(String)
    case replicate(stream: String, from: ReplicateFrom)
    case userSync(userID: String, state: UserSyncState, lastSyncMillis: Int64)
    case federationAck(token: Int64)
    case removePusher(appID: String, pushKey: String, userID: String)
    /// `keysJSON` is the keys' JSON text, validated and passed on unchanged.
    case invalidateCache(cacheFunction: String, keysJSON: String)
    /// `detailsJSON` is `[access_token, ip, user_agent, device_id, last_seen]`, validated, passed on unchanged.
    case userIP(userID: String, detailsJSON: String)
    case auth(secret: String)

    public var name: CommandName {
        switch self {
        case .server: .SERVER
        case .rdata: .RDATA
        case .position: .POSITION
        case .error: .ERROR
        case .ping: .PING
        case .sync: .SYNC
        case .name: .NAME
        case .replicate: .REPLICATE
        case .userSync: .USER_SYNC
        case .federationAck: .FEDERATION_ACK
        case .removePusher: .REMOVE_PUSHER
        case .invalidateCache: .INVALIDATE_CACHE
        case .userIP: .USER_IP
        case .auth: .AUTH
        }
    }
}

/// A row's JSON text, validated once when it was parsed, with the shape the scan found.
public struct RowJSON: Equatable, Sendable {
    public let text: String
    public let shape: JSONScanner.TopLevel

    public init(text: String, shape: JSONScanner.TopLevel) {
        self.text = text
        self.shape = shape
    }

    /// Validates `text`; throws the parser's error if it is not one JSON document.
    public init(validating text: String) throws(JSONScanner.SyntaxError) {
        self.init(text: text, shape: try JSONScanner.scan(text[...]))
    }

    /// Whether this is a JSON array with as many fields as rows of `stream` have.
    public func fits(_ stream: StreamName) -> Bool { shape == .array(count: stream.fieldCount) }
}
