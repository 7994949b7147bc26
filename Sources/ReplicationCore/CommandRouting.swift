/// What a server does with the commands by which workers change shared state (`USER_SYNC`,
/// `FEDERATION_ACK`, `REMOVE_PUSHER`, `INVALIDATE_CACHE`, `USER_IP`), and whether rows older than its log
/// can be fetched elsewhere. ``ServerSession`` asks it; the transport performs the answer. A hub acts on
/// the commands itself (``HubRouting``); a relay sends them to its upstream (``RelayRouting``).
public protocol CommandRouting: Sendable {
    /// What becomes of a worker's command; `wallMillis` is the time a row made of it carries.
    func route(_ command: Command, wallMillis: Int64) -> RoutedCommand
    /// Whether a `REPLICATE` from before the log is served from elsewhere instead of "fallen behind".
    var fetchesRowsOlderThanTheLog: Bool { get }
    /// Whether the users a worker was syncing are ended, as `USER_SYNC … end`, when it disconnects.
    var endsSyncingUsersOnClose: Bool { get }
}

/// The effect of a worker's command.
public enum RoutedCommand: Equatable, Sendable {
    /// Counted and kept here (syncing users, the last federation ack).
    case kept
    /// Append this row to the stream (the server's next token), so that every worker sees it.
    case appendRow(StreamName, row: String)
    /// Send the command upstream as it is.
    case forward(Command)
}

/// A hub: `REMOVE_PUSHER` becomes a `pushers` row and `INVALIDATE_CACHE` a `caches` row, as Synapse's
/// master makes them; the rest is counted. A hub whose streams are shared with hubs on other hosts fetches
/// rows older than its log from where they are shared.
public struct HubRouting: CommandRouting {
    public let fetchesRowsOlderThanTheLog: Bool

    public init(fetchesRowsOlderThanTheLog: Bool = false) {
        self.fetchesRowsOlderThanTheLog = fetchesRowsOlderThanTheLog
    }

    public func route(_ command: Command, wallMillis: Int64) -> RoutedCommand {
        switch command {
        case .removePusher(let appID, let pushKey, let userID):
            .appendRow(.pushers, row: JSONText.array([userID, appID, pushKey].map(JSONText.string) + ["true"]))
        case .invalidateCache(let function, let keys):
            .appendRow(.caches, row: JSONText.array([JSONText.string(function), keys, String(wallMillis)]))
        default:
            .kept
        }
    }

    public var endsSyncingUsersOnClose: Bool { false }
}

/// A relay: every such command goes upstream (the rows the upstream makes of them come back down), and
/// rows older than the relay's log are fetched from upstream.
public struct RelayRouting: CommandRouting {
    public init() {}

    public func route(_ command: Command, wallMillis: Int64) -> RoutedCommand { .forward(command) }
    public var fetchesRowsOlderThanTheLog: Bool { true }
    public var endsSyncingUsersOnClose: Bool { true }
}
