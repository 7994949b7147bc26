/// The keepalive rules of one connection, shared by both sides. Time is always passed in.
///
/// A side pings when it has sent nothing for an interval; it times the peer out only if the peer has
/// pinged at least once (so a hand-typed netcat session is never timed out); and after it asked for a
/// close it aborts the connection if it is still there a timeout later.
public struct Keepalive: Sendable, Equatable {
    public enum Decision: Equatable, Sendable {
        case nothing
        case sendPing
        case timeOut
        case abort
    }

    private let intervalMillis: Int64
    private let timeoutMillis: Int64
    public private(set) var lastReceivedMillis: Int64
    public private(set) var lastSentMillis: Int64 = 0
    public private(set) var peerHasPinged = false
    public private(set) var closeRequestedMillis: Int64?

    public init(now: Int64, configuration: ProtocolConfiguration) {
        self.intervalMillis = configuration.pingIntervalMillis
        self.timeoutMillis = configuration.pingTimeoutMillis
        self.lastReceivedMillis = now
    }

    /// A valid command arrived.
    public mutating func received(_ command: CommandName, now: Int64) {
        lastReceivedMillis = now
        if command == .PING { peerHasPinged = true }
    }

    public mutating func sent(now: Int64) { lastSentMillis = now }

    /// We are not reading what the peer sends (back-pressure): its silence until `now` is ours, not its.
    public mutating func excuseSilence(now: Int64) { lastReceivedMillis = now }

    public mutating func closeRequested(now: Int64) {
        if closeRequestedMillis == nil { closeRequestedMillis = now }
    }

    /// What the periodic timer should do now.
    public func tick(now: Int64) -> Decision {
        if let closed = closeRequestedMillis {
            return now - closed > timeoutMillis ? .abort : .nothing
        }
        if peerHasPinged && now - lastReceivedMillis > timeoutMillis { return .timeOut }
        if now - lastSentMillis >= intervalMillis { return .sendPing }
        return .nothing
    }
}
