/// What both ends of a replication connection share, as a value: the connection state (established ⇄
/// paused → closing → closed), the keepalive, the queue of commands held while paused, and the command
/// counters. ``ServerConnectionStateMachine`` and ``ClientConnectionStateMachine`` add their side's rules.
///
/// Every `now` is monotonic milliseconds (timeouts must survive wall-clock steps); wall time is passed
/// only where the protocol carries it.
public struct ConnectionStateMachine: Sendable {
    public enum State: Equatable, Sendable {
        case established
        case paused
        /// We sent an `ERROR` (or were told to close) and wait for the connection to go away.
        case closing(CloseReason)
        case closed(CloseReason)
    }

    /// What to write, decided by the machine.
    public enum Outbound: Equatable, Sendable {
        case nothing
        case write(Command)
        /// Write this `ERROR` now, ahead of anything queued, then close.
        case writeErrorAndClose(Command)
        /// Tear the connection down without further writes.
        case abort
    }

    /// What an inbound line means.
    public enum Inbound: Equatable, Sendable {
        /// Nothing to do: a blank line, a `PING`, or input arriving while we close.
        case nothing
        /// A valid command for this side to act on.
        case dispatch(Command)
        case reply(Outbound)
    }

    /// How the transport ended the connection.
    public enum Ending: Sendable {
        case closedByPeer
        case failed
        case aborted
    }

    public private(set) var state: State = .established
    public private(set) var counters = CommandCounters()
    public private(set) var keepalive: Keepalive
    public private(set) var pendingCommands: [Command] = []
    private let configuration: ProtocolConfiguration

    public init(configuration: ProtocolConfiguration, now: Int64) {
        self.configuration = configuration
        self.keepalive = Keepalive(now: now, configuration: configuration)
    }

    /// One line from the peer, without its delimiter; `accepts` says which commands this side may receive.
    public mutating func lineReceived(
        _ line: Substring, accepts: (CommandName) -> Bool, now: Int64
    ) -> Inbound {
        guard isOpen else { return .nothing }
        if line.allSatisfy({ $0.isWhitespace }) { return .nothing }
        let (word, rest) = CommandCodec.split(line)
        guard let name = CommandName(rawValue: String(word)), accepts(name) else {
            return .reply(fail(.line(.invalidCommand(name: String(word))), now: now))
        }
        _ = commandReceived(name, now: now)
        switch CommandCodec.parse(name, rest: rest) {
        case .failure(let error): return .reply(fail(.line(error), now: now))
        case .success(.ping): return .nothing
        case .success(let command): return .dispatch(command)
        }
    }

    /// Counts `count` commands from the peer (also ones recognised without ``lineReceived(_:accepts:now:)``);
    /// false, and nothing counted, once the connection is closing.
    public mutating func commandReceived(_ name: CommandName, count: Int = 1, now: Int64) -> Bool {
        guard isOpen else { return false }
        keepalive.received(name, now: now)
        counters.countInbound(name, by: count)
        return true
    }

    /// Sends a command now, or queues it while paused; too many queued commands end the connection.
    public mutating func send(_ command: Command, now: Int64) -> Outbound {
        switch state {
        case .established:
            recordSent(command.name, now: now)
            return .write(command)
        case .paused:
            pendingCommands.append(command)
            if pendingCommands.count > configuration.maxPendingCommands {
                return fail(.failedToKeepUp, now: now)
            }
            return .nothing
        case .closing, .closed:
            return .nothing
        }
    }

    /// Closes the connection with an `ERROR`, which is written ahead of anything queued.
    public mutating func fail(_ error: ClosingError, now: Int64) -> Outbound {
        guard isOpen else { return .nothing }
        state = .closing(error.reason)
        pendingCommands = []
        keepalive.closeRequested(now: now)
        recordSent(.ERROR, now: now)
        return .writeErrorAndClose(.error(error.text))
    }

    /// The transport's writability changed. Returns the queued commands to write, in order, on resume.
    public mutating func writabilityChanged(isWritable: Bool, now: Int64) -> [Command] {
        switch (state, isWritable) {
        case (.established, false):
            state = .paused
            return []
        case (.paused, true):
            state = .established
            let queued = pendingCommands
            pendingCommands = []
            for command in queued { recordSent(command.name, now: now) }
            return queued
        default:
            return []
        }
    }

    /// The keepalive timer fired at monotonic `now`; a `PING` carries `wallMillis`.
    public mutating func tick(now: Int64, wallMillis: Int64) -> Outbound {
        switch keepalive.tick(now: now) {
        case .nothing: return .nothing
        case .sendPing: return send(.ping(String(wallMillis)), now: now)
        case .timeOut: return fail(.pingTimeout, now: now)
        case .abort: return .abort
        }
    }

    /// We are not reading from the peer: it is not timed out for the silence.
    public mutating func excuseSilence(now: Int64) { keepalive.excuseSilence(now: now) }

    /// Commands written without going through ``send(_:now:)`` (a greeting, rows straight from the log).
    public mutating func recordSent(_ command: CommandName, count: Int = 1, now: Int64) {
        counters.countOutbound(command, by: count)
        keepalive.sent(now: now)
    }

    /// The connection is gone; returns the reason it is counted under.
    public mutating func connectionClosed(_ ending: Ending) -> CloseReason {
        if case .closed(let reason) = state { return reason }
        let reason: CloseReason
        switch (state, ending) {
        case (_, .aborted): reason = .connectionAborted
        case (.closing(let ours), _): reason = ours
        case (_, .closedByPeer): reason = .connectionDone
        case (_, .failed): reason = .connectionLost
        }
        state = .closed(reason)
        pendingCommands = []
        return reason
    }

    /// Whether writes go straight to the transport right now.
    public var isEstablished: Bool { state == .established }

    public var isOpen: Bool {
        switch state {
        case .established, .paused: true
        case .closing, .closed: false
        }
    }
}
