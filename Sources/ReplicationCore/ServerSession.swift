/// One server connection, as a value: every event (a line, a page read from the log, rows appended, an
/// append completed, writability changed, a timer) returns the actions to perform, and the channel
/// handler only performs them. `Lines` is the transport's bytes, which the session passes through
/// without looking inside.
///
/// It owns what a connection decides: the protocol state (``ServerConnectionStateMachine``), one
/// subscription per stream (a cursor into the log, never a queue of rows), the order in which
/// subscriptions catch up (one page read at a time, asked for only while the connection takes writes),
/// a writer's acknowledgements, the users a worker syncs, and where workers' commands go
/// (``CommandRouting``).
public struct ServerSession<Lines: Sendable>: Sendable {
    public enum Action: Sendable {
        /// Write one command.
        case write(Command)
        /// Write `count` `RDATA` lines, from the log or from live fan-out.
        case writeRows(Lines, count: Int)
        /// Write `POSITION` for each, in order: a writer's acknowledgements, many at once.
        case acknowledge([StreamPosition])
        /// Store the writer's batches completed so far (before an `ERROR` closes it, or as it goes).
        case submitWriterBatches
        /// A writer's `RDATA` or `POSITION` that took the general path: it joins the writer's batches.
        case ingest(Command)
        /// Write this `ERROR` ahead of anything else, then close; the connection ends counted under `reason`.
        case writeErrorAndClose(Command, reason: CloseReason)
        /// Tear the connection down without further writes.
        case abort
        /// Receive the rows appended to this stream from now on.
        case joinFanout(StreamName)
        /// Receive no more rows: the connection is closing.
        case leaveFanout
        /// Read the page of the stream after the token; answer with ``pageRead(_:after:_:now:)``.
        case readPage(StreamName, after: Int64)
        /// Fetch the rows after the token through `through` from where the routing gets them; answer with
        /// ``olderRowsFetched(_:request:_:now:)``.
        case fetchOlderRows(StreamName, after: Int64, through: Int64, request: Int)
        /// A worker's command arrived: count it.
        case count(Command)
        /// Append a row the server makes (at the stream's next token).
        case appendRow(StreamName, row: String)
        /// Send a command upstream.
        case forward(Command)
        /// Start or stop reading from the peer: a writer that does not take its acknowledgements is not
        /// read from, so that TCP pushes back on it.
        case readFromPeer(Bool)
        /// The client gave its name.
        case named(String, isWriter: Bool)
        /// Check the secret of a writer's `AUTH`; answer with ``secretVerified(_:now:)``. Costs a bcrypt
        /// computation: not on the event loop. Nothing more is read from the peer until it is answered
        /// (``readFromPeer(_:)`` follows).
        case verifySecret(writer: String, secret: String)
        /// The writer's `AUTH` was accepted: it may write from now on.
        case writerAuthenticated(String)
        /// Read the lines held while one was answered (``holdsLines``), and store the batches they complete.
        case readHeldLines
        /// The peer sent `ERROR`.
        case peerReportedError(String)
    }

    public private(set) var machine: ServerConnectionStateMachine
    private var subscriptions = [Subscription?](repeating: nil, count: StreamName.all.count)
    /// Streams that read from the log, in the order their catch-up was asked for.
    private var catchUpQueue: [StreamName] = []
    /// The page being read: at most one at a time, so that a connection holds at most one page.
    private var reading: (stream: StreamName, after: Int64)?
    /// Streams whose rows older than the log are being fetched, by request number.
    private var olderRowsRequests: [StreamName: Int] = [:]
    private var requestsMade = 0
    /// A writer's newest acknowledgement per stream, held while the connection does not take writes:
    /// acknowledgements are cumulative, so a newer one replaces an older one and a slow reader of them
    /// holds one per stream, never a queue (and an idle connection no allocation). By stream index, not
    /// hashed: while a busy writer's socket is full, every row's acknowledgement is held here.
    private var heldAcknowledgements: [Int64?] = []
    public private(set) var syncingUsers: Set<String> = []
    public private(set) var readsFromPeer = true
    private var isWritable = true
    /// Whether a writer's batch the log already has tokens for is being compared with what it stores.
    public private(set) var isCheckingResentBatch = false
    /// Bytes of the writer's rows handed to the log and not yet stored.
    private var unstoredWriterBytes = 0
    private let maxUnstoredWriterBytes: Int
    private let routing: any CommandRouting
    /// `INVALIDATE_CACHE`/`REMOVE_PUSHER` this connection may still send.
    private var hubCommands: TokenBucket

    public init(
        serverName: String, writers: Set<String>, writersWithCredentials: Set<String> = [],
        configuration: ProtocolConfiguration, routing: any CommandRouting, now: Int64
    ) {
        self.machine = ServerConnectionStateMachine(
            serverName: serverName, writers: writers, writersWithCredentials: writersWithCredentials,
            configuration: configuration, now: now)
        self.routing = routing
        self.hubCommands = TokenBucket(
            perSecond: configuration.hubRowsPerSecond, capacity: configuration.hubRowsPerSecond * 10, now: now)
        self.maxUnstoredWriterBytes = configuration.maxUnstoredWriterBytes
    }

    /// Whether an `AUTH` is being verified: the connection's further lines wait until it is.
    private var isVerifyingSecret: Bool { machine.authentication == .verifying }

    /// Whether the connection's further lines wait: an `AUTH` being verified, or a re-sent batch being
    /// compared (what follows it must reach the log after it).
    public var holdsLines: Bool { isVerifyingSecret || isCheckingResentBatch }

    /// The last token written per stream (by ``StreamName/index``), `nil` where not subscribed.
    public var sentTokens: [Int64?] { subscriptions.map { $0?.cursor } }

    /// What the metrics show of this connection; the transport adds what only it knows.
    public func snapshot(
        peer: String, connectedAtMillis: Int64, bufferedWritableBytes: Int, kernelSendQueue: Int,
        kernelReceiveQueue: Int
    ) -> ConnectionSnapshot {
        ConnectionSnapshot(
            name: machine.name, peer: peer, isWriter: machine.isWriter, connectedAtMillis: connectedAtMillis,
            pendingCommands: machine.pendingCommands.count, bufferedWritableBytes: bufferedWritableBytes,
            kernelSendQueue: kernelSendQueue, kernelReceiveQueue: kernelReceiveQueue, counters: machine.counters,
            sentTokens: sentTokens, syncingUsers: syncingUsers.count)
    }

    /// Whether a writer's lines may be taken on their bytes (``WriterRowLine``) rather than through
    /// ``lineReceived(_:now:wallMillis:head:)``.
    public var takesWriterRows: Bool { machine.takesWriterRows }

    // MARK: Events from the connection.

    /// The greeting: `SERVER`, then a `PING` so that the client knows it may time us out.
    public mutating func connectionActive(now: Int64, wallMillis: Int64) -> [Action] {
        machine.connectionActive(now: now, wallMillis: wallMillis).map(Action.write)
    }

    /// The keepalive timer fired.
    public mutating func tick(now: Int64, wallMillis: Int64) -> [Action] {
        if !readsFromPeer { machine.excuseSilence(now: now) }
        return perform(machine.tick(now: now, wallMillis: wallMillis), now: now)
    }

    /// One line (without its delimiter) that the writer fast path did not take; `head` gives a stream's
    /// current token.
    public mutating func lineReceived(
        _ line: Substring, now: Int64, wallMillis: Int64, head: (StreamName) -> Int64
    ) -> [Action] {
        switch machine.lineReceived(line, now: now) {
        case .nothing: []
        case .reply(let outbound): perform(outbound, now: now)
        case .dispatch(let command): dispatch(command, now: now, wallMillis: wallMillis, head: head)
        }
    }

    /// A line that could not be read as text, or that was too long.
    public mutating func lineRejected(_ error: ClosingError, now: Int64) -> [Action] {
        perform(machine.lineRejected(error, now: now), now: now)
    }

    /// `count` rows were taken on their bytes while ``takesWriterRows``.
    public mutating func writerRowsReceived(_ count: Int, now: Int64) {
        machine.writerRowsReceived(count, now: now)
    }

    /// A writer's line broke the batch rules.
    public mutating func writerLineRejected(_ rejection: ClosingError, now: Int64) -> [Action] {
        perform(machine.fail(rejection, now: now), now: now)
    }

    /// The writer's batches, `bytes` of rows, were handed to the log.
    public mutating func writerBatchesSubmitted(bytes: Int) -> [Action] {
        unstoredWriterBytes += bytes
        return readingFollows()
    }

    /// The writer's batches of `bytes` were stored (`positions`, one per batch, in order), up to a refusal
    /// if any.
    public mutating func writerBatchesStored(
        _ positions: [StreamPosition], refusal: ClosingError?, bytes: Int, now: Int64
    ) -> [Action] {
        unstoredWriterBytes -= bytes
        var actions = readingFollows()
        if !positions.isEmpty {
            if machine.isEstablished {
                machine.recordSent(.POSITION, count: positions.count, now: now)
                actions.append(.acknowledge(positions))
            } else if machine.isOpen {
                if heldAcknowledgements.isEmpty {
                    heldAcknowledgements = Array(repeating: nil, count: StreamName.all.count)
                }
                for position in positions { heldAcknowledgements[position.stream.index] = position.token }
            }
        }
        if let refusal { actions += perform(machine.fail(refusal, now: now), now: now) }
        return actions
    }

    /// The log refused a writer's batch whose tokens it already has: it is compared with what the log
    /// stores, and nothing more is read from the writer or handed to the log until that is answered with
    /// ``resentBatchChecked(_:refusal:now:)``.
    public mutating func resentBatchCheckStarted() -> [Action] {
        isCheckingResentBatch = true
        return readingFollows()
    }

    /// The re-sent batch is what the log stores (`positions` acknowledge it again, as the original was),
    /// or it is not (`refusal` closes the writer).
    public mutating func resentBatchChecked(_ positions: [StreamPosition], refusal: ClosingError?, now: Int64)
        -> [Action]
    {
        isCheckingResentBatch = false
        return writerBatchesStored(positions, refusal: refusal, bytes: 0, now: now)
    }

    /// The transport's writability changed.
    public mutating func writabilityChanged(isWritable: Bool, now: Int64) -> [Action] {
        var actions = machine.writabilityChanged(isWritable: isWritable, now: now).map(Action.write)
        if machine.isEstablished, !heldAcknowledgements.isEmpty {
            let held = StreamName.all.compactMap { stream in
                heldAcknowledgements[stream.index].map { StreamPosition(stream, $0) }
            }
            heldAcknowledgements = []
            machine.recordSent(.POSITION, count: held.count, now: now)
            actions.append(.acknowledge(held))
        }
        self.isWritable = isWritable
        return actions + readingFollows()
    }

    /// A writer is read from while it takes its acknowledgements, while what it sent before is not piling
    /// up waiting for commits, and while no line of its is being answered (``holdsLines``).
    private mutating func readingFollows() -> [Action] {
        let reads = isWritable && unstoredWriterBytes < maxUnstoredWriterBytes && !holdsLines
        guard machine.isWriter || isVerifyingSecret, readsFromPeer != reads else { return [] }
        readsFromPeer = reads
        return [.readFromPeer(reads)]
    }

    /// The peer's TLS client certificate, verified against the client CA, names `commonName`: it stands in
    /// for `AUTH` when the connection's first `NAME` is the same writer's.
    public mutating func peerCertified(as commonName: String) {
        machine.peerCertified(as: commonName)
    }

    /// The secret asked about with ``Action/verifySecret(writer:secret:)`` was checked. A wrong one ends
    /// the connection (the caller delays this answer, so that guessing is slow).
    public mutating func secretVerified(_ succeeded: Bool, now: Int64) -> [Action] {
        guard isVerifyingSecret else { return [] }
        let outbound = machine.authenticationVerified(succeeded, now: now)
        if succeeded, let writer = machine.identity {
            return [.writerAuthenticated(writer)] + readingFollows() + [.readHeldLines]
        }
        return perform(outbound, now: now)
    }

    /// The grace after a close ran out and the peer is still there.
    public mutating func abort() -> [Action] { perform(.abort, now: 0) }

    /// The server is shutting down.
    public mutating func shutDown(now: Int64) -> [Action] {
        perform(machine.fail(.serverShutdown, now: now), now: now)
    }

    /// The connection is gone; returns the reason it is counted under.
    public mutating func connectionClosed(
        _ ending: ConnectionStateMachine.Ending, wallMillis: Int64
    ) -> (reason: CloseReason, actions: [Action]) {
        let reason = machine.connectionClosed(ending)
        var actions: [Action] = [.submitWriterBatches, .leaveFanout]
        // Upstream, the users this worker was syncing stop now (Synapse clears them when a worker goes).
        if routing.endsSyncingUsersOnClose {
            for user in syncingUsers.sorted() {
                actions.append(.forward(.userSync(userID: user, state: .end, lastSyncMillis: wallMillis)))
            }
        }
        syncingUsers = []
        catchUpQueue = []
        return (reason, actions)
    }

    // MARK: Events from the log.

    /// New batches of one stream, in log order, and the same as one batch when they leave no gap.
    /// Written live while the subscription is at the head and the connection takes writes; otherwise the
    /// subscription keeps its cursor and catches up from the log.
    public mutating func batchesAppended(
        _ batches: [StreamBatch<Lines>], joined: StreamBatch<Lines>?, isWritable: Bool, now: Int64
    ) -> [Action] {
        guard let stream = batches.first?.stream, var subscription = subscriptions[stream.index] else { return [] }
        let canWrite = machine.isEstablished && isWritable
        // At the head and writable (the common case): the whole piece in one write.
        if let joined, canWrite, subscription.phase == .live, subscription.cursor == joined.previousToken {
            _ = subscription.offered(previousToken: joined.previousToken, token: joined.token, canWrite: true)
            subscriptions[stream.index] = subscription
            return joined.rowCount > 0 ? [writeRows(joined.liveLines, count: joined.rowCount, now: now)] : []
        }
        var actions: [Action] = []
        var mustCatchUp = false
        for batch in batches {
            switch subscription.offered(previousToken: batch.previousToken, token: batch.token, canWrite: canWrite) {
            case .write:
                if batch.rowCount > 0 { actions.append(writeRows(batch.liveLines, count: batch.rowCount, now: now)) }
            case .skip:
                if subscription.isCatchingUp { mustCatchUp = true }
            case .catchUp:
                mustCatchUp = true
            }
        }
        subscriptions[stream.index] = subscription
        if mustCatchUp { queueCatchUp(stream) }
        return actions
    }

    /// The page to read next, if a subscription is catching up, no page is being read, and the
    /// connection takes writes. Asked after every event, once its actions are performed and flushed.
    public mutating func nextRead(isWritable: Bool) -> Action? {
        guard reading == nil, machine.isEstablished, isWritable else { return nil }
        while let stream = catchUpQueue.first {
            guard let subscription = subscriptions[stream.index], subscription.isCatchingUp else {
                catchUpQueue.removeFirst()
                continue
            }
            reading = (stream, subscription.cursor)
            return .readPage(stream, after: subscription.cursor)
        }
        return nil
    }

    /// The page asked for with ``Action/readPage(_:after:)``.
    public mutating func pageRead(_ stream: StreamName, after: Int64, _ result: PageRead<Lines>, now: Int64) -> [Action]
    {
        reading = nil
        // A new `REPLICATE` for the stream while the page was read makes it stale.
        guard machine.isOpen, var subscription = subscriptions[stream.index], subscription.isCatchingUp,
            subscription.cursor == after
        else { return [] }
        switch result {
        case .page(let page):
            var actions: [Action] = []
            if page.rowCount > 0 { actions.append(writeRows(page.lines, count: page.rowCount, now: now)) }
            let announce = subscription.pageWritten(endToken: page.endToken, reachedHead: page.reachedHead)
            subscriptions[stream.index] = subscription
            if !subscription.isCatchingUp { catchUpQueue.removeAll { $0 == stream } }
            if announce { actions += send(.position(stream: stream.rawValue, token: page.endToken), now: now) }
            return actions
        case .fallenBehind(let oldestServable):
            guard routing.fetchesRowsOlderThanTheLog else {
                return perform(machine.fail(.fallenBehind(stream), now: now), now: now)
            }
            catchUpQueue.removeAll { $0 == stream }
            requestsMade += 1
            olderRowsRequests[stream] = requestsMade
            return [.fetchOlderRows(stream, after: after, through: oldestServable, request: requestsMade)]
        case .failed(let why):
            return perform(machine.fail(.replicateFailed(stream, why), now: now), now: now)
        }
    }

    /// The rows asked for with ``Action/fetchOlderRows(_:after:through:request:)``; then the log takes over.
    public mutating func olderRowsFetched(_ stream: StreamName, request: Int, _ result: PageRead<Lines>, now: Int64)
        -> [Action]
    {
        // A new `REPLICATE` for the stream while this was under way makes it stale.
        guard olderRowsRequests[stream] == request else { return [] }
        olderRowsRequests[stream] = nil
        guard machine.isOpen, var subscription = subscriptions[stream.index] else { return [] }
        guard case .page(let page) = result else {
            return perform(machine.fail(.fallenBehind(stream), now: now), now: now)
        }
        var actions: [Action] = []
        if page.rowCount > 0 { actions.append(writeRows(page.lines, count: page.rowCount, now: now)) }
        _ = subscription.pageWritten(endToken: page.endToken, reachedHead: false)
        subscriptions[stream.index] = subscription
        queueCatchUp(stream)
        return actions
    }

    // MARK: Commands.

    private mutating func dispatch(_ command: Command, now: Int64, wallMillis: Int64, head: (StreamName) -> Int64)
        -> [Action]
    {
        switch command {
        case .name(let name):
            return [.named(name, isWriter: machine.isWriter)]
        case .error(let text):
            return [.peerReportedError(text)]
        case .replicate(let name, let from):
            if name == "ALL" {
                return StreamName.all.flatMap { subscribe($0, from: from, head: head($0), now: now) }
            }
            guard let stream = StreamName(name) else {
                return perform(machine.fail(.unknownStream(name), now: now), now: now)
            }
            return subscribe(stream, from: from, head: head(stream), now: now)
        case .userSync(let user, let state, _):
            if state == .start { syncingUsers.insert(user) } else { syncingUsers.remove(user) }
            return route(command, wallMillis: wallMillis)
        case .removePusher, .invalidateCache:
            guard hubCommands.take(now: now) else {
                return perform(
                    machine.fail(.rateLimited(command.name, perSecond: hubCommands.perSecond), now: now), now: now)
            }
            return route(command, wallMillis: wallMillis)
        case .federationAck, .userIP:
            return route(command, wallMillis: wallMillis)
        case .auth(let secret):
            guard let writer = machine.identity else { return [] }
            return [.verifySecret(writer: writer, secret: secret)] + readingFollows()
        case .rdata, .position:
            return [.ingest(command)]
        case .server, .ping, .sync:
            // The machine never dispatches these to a server.
            return []
        }
    }

    private func route(_ command: Command, wallMillis: Int64) -> [Action] {
        switch routing.route(command, wallMillis: wallMillis) {
        case .kept: [.count(command)]
        case .appendRow(let stream, let row): [.count(command), .appendRow(stream, row: row)]
        case .forward(let forwarded): [.count(command), .forward(forwarded)]
        }
    }

    private mutating func subscribe(_ stream: StreamName, from: ReplicateFrom, head: Int64, now: Int64) -> [Action] {
        catchUpQueue.removeAll { $0 == stream }
        olderRowsRequests[stream] = nil
        var actions: [Action] = [.joinFanout(stream)]
        switch from {
        case .now:
            subscriptions[stream.index] = .live(at: head)
            actions += send(.position(stream: stream.rawValue, token: head), now: now)
        case .token(let token):
            // A token beyond the head is answered with the head, as Synapse does: nothing after it exists.
            subscriptions[stream.index] = .replicating(after: min(token, head), head: head)
            catchUpQueue.append(stream)
        }
        return actions
    }

    private mutating func queueCatchUp(_ stream: StreamName) {
        if olderRowsRequests[stream] == nil, !catchUpQueue.contains(stream) { catchUpQueue.append(stream) }
    }

    // MARK: Outbound.

    private mutating func writeRows(_ lines: Lines, count: Int, now: Int64) -> Action {
        machine.rowsWritten(count, now: now)
        return .writeRows(lines, count: count)
    }

    private mutating func send(_ command: Command, now: Int64) -> [Action] {
        perform(machine.send(command, now: now), now: now)
    }

    /// What the protocol machine decided, as actions.
    private mutating func perform(_ outbound: ServerConnectionStateMachine.Outbound, now: Int64) -> [Action] {
        switch outbound {
        case .nothing:
            return []
        case .write(let command):
            return [.write(command)]
        case .writeErrorAndClose(let error):
            guard case .closing(let reason) = machine.state else { return [] }
            catchUpQueue = []
            // The batches a writer completed before the bad line are kept.
            return [.submitWriterBatches, .leaveFanout, .writeErrorAndClose(error, reason: reason)]
        case .abort:
            _ = machine.connectionClosed(.aborted)
            return [.abort]
        }
    }
}

extension ServerSession.Action: Equatable where Lines: Equatable {}
