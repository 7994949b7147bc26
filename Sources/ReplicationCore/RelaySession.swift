/// A relay's connection upstream, as a value: which streams it asks for and from where, how the rows that
/// arrive become batches of its own log, and which of its workers' commands go upstream. Each event
/// returns actions; the relay's upstream link performs them.
///
/// Rows are stored with the upstream's tokens and batches. A catch-up sends every row with its own token,
/// so the rows of one token are gathered per stream and stored as one batch once the token changes or
/// the stream's `POSITION` ends its catch-up; live rows arrive as whole batches.
public struct RelaySession: Sendable {
    public enum Action: Equatable, Sendable {
        /// Store rows under one token (none: the stream's position moves). With `startsLog`, the relay's
        /// log of the stream starts there, with nothing known before (it joined upstream at `NOW`).
        case store(StreamName, rows: [String], token: Int64, startsLog: Bool)
        /// Send a worker's command upstream.
        case send(Command)
        /// On the next connection, ask for the stream after `token`.
        case resume(StreamName, after: Int64)
        /// On the next connection, ask for the stream at `NOW`: the rows the relay missed are lost to its
        /// workers (the upstream no longer has them).
        case restartAtNow(StreamName)
        /// Ask, each on a connection of its own, whether the upstream offers these streams.
        case probeOffered([StreamName])
        /// Stop asking for a stream the upstream does not offer.
        case unsubscribe(StreamName)
    }

    /// Per stream, the last token handed to the log (appends complete later).
    public private(set) var lastStored: [Int64]
    /// Streams asked for on every connection; those the upstream turns out not to offer are removed.
    public private(set) var subscribed = Set(StreamName.all)
    public private(set) var finishedConnecting = false
    /// Streams subscribed at `NOW`: their first `POSITION` is where the relay's log starts.
    private var startingAtNow: Set<StreamName> = []
    /// Streams that answered `POSITION` on the current connection.
    private var answered: Set<StreamName> = []
    private var catchingUp: [StreamName: (token: Int64, rows: [String])] = [:]
    /// Local workers syncing each user: upstream sees the relay as one worker.
    private var syncingWorkers: [String: Int] = [:]

    /// A relay whose log holds each stream up to `heads` (by ``StreamName/index``; 0 for a stream it has
    /// never seen).
    public init(heads: [Int64]) {
        lastStored = heads
        startingAtNow = Set(StreamName.all.filter { heads[$0.index] == 0 })
    }

    /// What the first connection asks for: every stream after the relay's log, `NOW` for one it never saw.
    public var subscriptions: [(StreamName, ReplicateFrom)] {
        StreamName.all.map { ($0, startingAtNow.contains($0) ? .now : .token(lastStored[$0.index])) }
    }

    // MARK: Events from upstream.

    public mutating func rowsReceived(_ rows: [String], stream: StreamName, token: Int64) -> [Action] {
        // Live: whole batches.
        guard !answered.contains(stream) else { return store(rows, stream: stream, token: token) }
        if let gathered = catchingUp[stream], gathered.token == token {
            catchingUp[stream]!.rows += rows
            return []
        }
        let stored = storeCaughtUpRows(of: stream)
        catchingUp[stream] = (token, rows)
        return stored
    }

    public mutating func positionReceived(_ token: Int64, stream: StreamName) -> [Action] {
        var actions = storeCaughtUpRows(of: stream)
        answered.insert(stream)
        let first = startingAtNow.remove(stream) != nil
        guard token > lastStored[stream.index] else { return actions }
        lastStored[stream.index] = token
        actions.append(.store(stream, rows: [], token: token, startsLog: first))
        return actions
    }

    /// Every stream has answered on this connection.
    public mutating func connectingFinished() { finishedConnecting = true }

    /// The upstream sent `ERROR`.
    public mutating func serverError(_ text: String) -> [Action] {
        switch RemoteError(text) {
        case .fallenBehind(let stream):
            // The upstream no longer has the rows after what the relay stored (it was down longer than
            // the upstream keeps rows): rather than asking for them on every reconnect, the stream starts
            // again at the upstream's token; workers behind that get `… has fallen behind` from the relay.
            catchingUp[stream] = nil
            startingAtNow.insert(stream)
            return [.restartAtNow(stream)]
        case .replicateRefused where !finishedConnecting:
            // An upstream that does not offer a stream closes the connection when asked for it
            // (Synapse's master offers `federation` only when a worker sends federation).
            let unanswered = StreamName.all.filter { subscribed.contains($0) && !answered.contains($0) }
            return unanswered.isEmpty ? [] : [.probeOffered(unanswered)]
        default:
            return []
        }
    }

    /// A probe found that the upstream does not offer `stream`.
    public mutating func streamNotOffered(_ stream: StreamName) -> [Action] {
        subscribed.remove(stream) == nil ? [] : [.unsubscribe(stream)]
    }

    /// The upstream connection came up or went down.
    public mutating func connectionChanged(connected: Bool) -> [Action] {
        answered = []
        finishedConnecting = false
        guard !connected else { return [] }
        // Rows of a token whose catch-up was cut short may be incomplete: drop them, and resume every
        // stream after what was stored.
        catchingUp = [:]
        return StreamName.all.filter { subscribed.contains($0) && !startingAtNow.contains($0) }
            .map { .resume($0, after: lastStored[$0.index]) }
    }

    // MARK: Events from local workers.

    /// A worker's command for upstream. Of `USER_SYNC`, only a user's first start and last end go.
    public mutating func workerCommand(_ command: Command) -> [Action] {
        if case .userSync(let user, let state, _) = command {
            let before = syncingWorkers[user, default: 0]
            let after = state == .start ? before + 1 : max(0, before - 1)
            syncingWorkers[user] = after == 0 ? nil : after
            guard (before == 0) != (after == 0) else { return [] }
        }
        return [.send(command)]
    }

    // MARK: Storing.

    private mutating func storeCaughtUpRows(of stream: StreamName) -> [Action] {
        guard let gathered = catchingUp.removeValue(forKey: stream) else { return [] }
        return store(gathered.rows, stream: stream, token: gathered.token)
    }

    private mutating func store(_ rows: [String], stream: StreamName, token: Int64) -> [Action] {
        guard token > lastStored[stream.index] else { return [] }  // already stored
        lastStored[stream.index] = token
        return [.store(stream, rows: rows, token: token, startsLog: false)]
    }
}
