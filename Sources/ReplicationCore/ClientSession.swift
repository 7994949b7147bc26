/// What a replication client remembers across connections: where each stream is, who is syncing, what
/// it was asked to send while disconnected, and its reconnect back-off.
public struct ClientSession: Sendable {
    /// Per subscribed stream: resume strictly after this token, or at `NOW` until a position is known.
    public private(set) var positions: [(StreamName, ReplicateFrom)]
    public private(set) var syncingUsers: [String] = []
    public private(set) var queued: [Command] = []
    public var backoff = ReconnectBackoff()
    /// Commands kept while disconnected; more are refused (an unbounded queue is a leak in disguise).
    public let maxQueued: Int

    public init(subscriptions: [(StreamName, ReplicateFrom)], maxQueued: Int = 10_000) {
        self.positions = subscriptions
        self.maxQueued = maxQueued
    }

    /// Rows or a `POSITION` up to `token` were handed to the application: resume after it.
    public mutating func processed(_ stream: StreamName, through token: Int64) {
        guard let index = positions.firstIndex(where: { $0.0 == stream }) else { return }
        positions[index].1 = .token(token)
    }

    /// The next connection asks for `stream` from `NOW` (what came before cannot be had any more).
    public mutating func restartAtNow(_ stream: StreamName) {
        guard let index = positions.firstIndex(where: { $0.0 == stream }) else { return }
        positions[index].1 = .now
    }

    /// Stops asking for a stream on the next connections (the server does not offer it).
    public mutating func unsubscribe(_ stream: StreamName) {
        positions.removeAll { $0.0 == stream }
    }

    /// Remembers a command for the next connection; false if the queue is full.
    public mutating func queue(_ command: Command) -> Bool {
        if case .userSync(let user, let state, _) = command {
            // Syncing users are re-announced on every connection anyway.
            if state == .start { syncingUsers.append(user) } else { syncingUsers.removeAll { $0 == user } }
            return true
        }
        guard queued.count < maxQueued else { return false }
        queued.append(command)
        return true
    }

    /// Tracks `USER_SYNC` sent while connected, so that a new connection re-announces it.
    public mutating func sent(_ command: Command) {
        guard case .userSync(let user, let state, _) = command else { return }
        if state == .start { syncingUsers.append(user) } else { syncingUsers.removeAll { $0 == user } }
    }

    /// The queued commands, handed over once to a new connection.
    public mutating func takeQueued() -> [Command] {
        defer { queued = [] }
        return queued
    }
}
