import Logging
import NIOCore
import ReplicationCore
import StreamLog

/// One client connection on the server. It asks ``ServerConnectionStateMachine`` what each event means
/// and performs the answer in ``run(_:)``; subscriptions are cursors into the hub's log.
///
/// It splits its own lines (``LineFramer``) rather than taking one pipeline event per line: a writer
/// sends hundreds of lines per read, and the per-event cost was a fifth of ingesting a row.
final class ServerConnectionHandler: ChannelInboundHandler, HubConnection {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var machine: ServerConnectionStateMachine
    private var subscriptions = [Subscription?](repeating: nil, count: StreamName.all.count)
    /// Streams that are reading from the log, in the order their catch-up was requested.
    private var catchUpQueue: [StreamName] = []
    private var ingest: WriterIngest
    private var framer: LineFramer
    /// The start of a line whose end has not arrived yet, copied out of the read buffer.
    private var unfinishedLine: ByteBuffer?
    private var syncingUsers: Set<String> = []
    /// Relay mode: streams whose rows older than the log are being fetched from upstream, by request.
    private var backfills: [StreamName: Int] = [:]
    private var backfillsStarted = 0

    private let hub: ReplicationHub
    private let configuration: ServerConfiguration
    private let clock: ConnectionClock
    private var logger: Logger
    private var context: ChannelHandlerContext?
    private var fanout: LoopFanout?
    private var keepaliveTask: RepeatedTask?
    private var needsFlush = false
    private var flushScheduled = false
    private var pumping = false
    private var pumpAgain = false
    private var transportFailed = false
    private var peer = "unknown"
    private var closeFuture: EventLoopFuture<Void>!
    private var connectedAtMillis: Int64 = 0
    /// The socket, borrowed once when the channel became active and used only on this event loop while
    /// the channel is active. NIO closes the descriptor and fires `channelInactive` in one step on this
    /// loop, so no snapshot can run in between; borrowing it again per scrape costs ~5 µs of runtime
    /// casts per connection.
    private var descriptor: NIOBSDSocket.Handle?
    /// False once a snapshot saw nothing queued, in NIO or in the kernel: only a write of ours can queue
    /// bytes again, so until then an idle connection's send queues are known to be empty without asking.
    private var sendQueuesMayHoldBytes = true

    init(hub: ReplicationHub, configuration: ServerConfiguration, clock: ConnectionClock, logger: Logger) {
        self.hub = hub
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
        self.machine = ServerConnectionStateMachine(
            serverName: configuration.serverName, writers: configuration.writers,
            configuration: configuration.protocolLimits, now: clock.monotonicMillis)
        self.framer = LineFramer(maxLineLength: configuration.protocolLimits.maxLineLength)
        // A writer's batches completed during the current read, appended together when it ends.
        self.ingest = WriterIngest(configuration: configuration.protocolLimits, allocator: ByteBufferAllocator())
    }

    // MARK: Channel events: ask the machine, run the answer.

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        closeFuture = context.channel.closeFuture
        connectedAtMillis = clock.wallMillis
        descriptor = try? context.pipeline.syncOperations.withUnsafeTransportIfAvailable(of: NIOBSDSocket.Handle.self) {
            $0
        }
        peer = context.remoteAddress.map(describe) ?? "unknown"
        logger[metadataKey: "peer"] = "\(peer)"
        let fanout = hub.fanout(on: context.eventLoop)
        fanout.add(self)
        self.fanout = fanout
        logger.info("connection opened")
        for command in machine.connectionActive(now: clock.monotonicMillis, wallMillis: clock.wallMillis) { write(command) }
        flushIfNeeded()
        let interval = TimeAmount.milliseconds(configuration.protocolLimits.pingIntervalMillis)
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        keepaliveTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            this.value.keepaliveTick()
        }
        context.fireChannelActive()
    }

    private func keepaliveTick() {
        run(machine.tick(now: clock.monotonicMillis, wallMillis: clock.wallMillis))
        flushIfNeeded()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        let continuesALine = unfinishedLine != nil
        if var unfinished = unfinishedLine.take() {
            unfinished.writeBuffer(&bytes)
            bytes = unfinished
        }
        let now = clock.monotonicMillis
        while let frame = nextGeneralFrame(&bytes, now: now) { received(frame, now: now) }
        guard bytes.readableBytes > 0 else { return }
        if continuesALine {
            // Already our own buffer: kept, so that a line arriving in many small pieces is copied once.
            bytes.discardReadBytes()
            unfinishedLine = bytes
        } else {
            // Copied out of the read buffer, so that the channel can reuse it.
            var unfinished = context.channel.allocator.buffer(capacity: bytes.readableBytes)
            unfinished.writeBuffer(&bytes)
            unfinishedLine = unfinished
        }
    }

    /// The next line for the general path. A writer's rows in their common form are taken on the way,
    /// many per call: one access to the handler's state per run of rows, not several per row.
    private func nextGeneralFrame(_ bytes: inout ByteBuffer, now: Int64) -> InboundFrame? {
        while machine.takesWriterRows {
            let (taken, stop) = ingest.takeRows(from: &bytes, framer: &framer)
            if taken > 0 { machine.writerRowsReceived(taken, now: now) }
            switch stop {
            case nil: return nil
            case .generalPath(let frame): return frame
            case .rejected(let rejection): rejectWriterLine(rejection)
            }
        }
        return framer.nextFrame(&bytes)
    }

    private func received(_ frame: InboundFrame, now: Int64) {
        switch frame.text() {
        case .failure(let error):
            run(machine.lineRejected(error, now: now))
        case .success(let text):
            switch machine.lineReceived(text[...], now: now) {
            case .nothing: break
            case .dispatch(let command): dispatch(command)
            case .reply(let outbound): run(outbound)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        submitWriterAppends()
        flushIfNeeded()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let now = clock.monotonicMillis
        for command in machine.writabilityChanged(isWritable: context.channel.isWritable, now: now) {
            write(command)
        }
        pump()
        flushIfNeeded()
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        transportFailed = true
        logger.debug("transport error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        submitWriterAppends()
        let reason = machine.connectionClosed(transportFailed ? .failed : .closedByPeer)
        descriptor = nil
        keepaliveTask?.cancel()
        keepaliveTask = nil
        fanout?.remove(self)
        fanout = nil
        // Upstream, the users this worker was syncing stop now (Synapse clears them when a worker goes).
        if let upstream = hub.upstream {
            for user in syncingUsers { upstream.forward(.userSync(userID: user, state: .end, lastSyncMillis: clock.wallMillis)) }
        }
        syncingUsers = []
        hub.count { $0.closeReasons[reason, default: 0] += 1 }
        logger.info("connection closed", metadata: ["reason": "\(reason.rawValue)"])
        self.context = nil
        context.fireChannelInactive()
    }

    // MARK: Hub events (on this event loop).

    /// Writes new batches of one stream in order and flushes once; a subscriber that cannot take them
    /// live keeps its cursor and catches up from the log.
    func deliver(_ batches: [AppendedBatch], joined: AppendedBatch?) {
        guard let context, let stream = batches.first?.stream, var subscription = subscriptions[stream.index] else { return }
        // At the head and writable (the common case): the whole piece in one write.
        if let joined, subscription.phase == .live, subscription.cursor == joined.previousToken, machine.isEstablished,
            context.channel.isWritable
        {
            _ = subscription.offered(previousToken: joined.previousToken, token: joined.token, canWrite: true)
            subscriptions[stream.index] = subscription
            if joined.rowCount > 0 { writeRows(joined.liveLines, count: joined.rowCount) }
            flushIfNeeded()
            return
        }
        var mustCatchUp = false
        for batch in batches {
            let canWrite = machine.isEstablished && context.channel.isWritable
            switch subscription.offered(previousToken: batch.previousToken, token: batch.token, canWrite: canWrite) {
            case .write:
                if batch.rowCount > 0 { writeRows(batch.liveLines, count: batch.rowCount) }
            case .skip:
                if subscription.isCatchingUp { mustCatchUp = true }
            case .catchUp:
                mustCatchUp = true
            }
        }
        subscriptions[stream.index] = subscription
        if mustCatchUp {
            queueCatchUp(stream)
            pump()
        }
        flushIfNeeded()
    }

    func shutDown(grace: TimeAmount) -> EventLoopFuture<Void> {
        run(machine.fail(.serverShutdown, now: clock.monotonicMillis))
        if let context {
            let this = NIOLoopBound(self, eventLoop: context.eventLoop)
            let abort = context.eventLoop.scheduleTask(in: grace) { this.value.run(.abort) }
            closeFuture.whenComplete { _ in abort.cancel() }
        }
        return closeFuture
    }

    func snapshot() -> ConnectionSnapshot {
        var unread = 0
        var unsent = 0
        var buffered = 0
        if let descriptor {
            unread = (try? SocketQueues.unread(descriptor: descriptor)) ?? 0
            if sendQueuesMayHoldBytes {
                unsent = (try? SocketQueues.unsent(descriptor: descriptor)) ?? 0
                buffered = (try? context?.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
                sendQueuesMayHoldBytes = unsent > 0 || buffered > 0
            }
        }
        return ConnectionSnapshot(
            name: machine.name, peer: peer, isWriter: machine.isWriter, connectedAtMillis: connectedAtMillis,
            pendingCommands: machine.pendingCommands.count, bufferedWritableBytes: buffered,
            kernelSendQueue: unsent, kernelReceiveQueue: unread,
            counters: machine.counters, sentTokens: subscriptions.map { $0?.cursor }, syncingUsers: syncingUsers.count)
    }

    // MARK: The one place with side effects.

    private func run(_ outbound: ServerConnectionStateMachine.Outbound) {
        guard let context else { return }
        switch outbound {
        case .nothing:
            break
        case .write(let command):
            write(command)
        case .writeErrorAndClose(let error):
            submitWriterAppends()  // the batches completed before the bad line are kept
            logger.warning("closing connection", metadata: ["error": "\(CommandCodec.encode(error))"])
            fanout?.remove(self)
            catchUpQueue = []
            let written = context.eventLoop.makePromise(of: Void.self)
            write(error, promise: written)
            needsFlush = false
            context.flush()
            // Half-close once the ERROR is out, so the peer reads it before EOF instead of a reset;
            // the keepalive aborts the connection if the peer never goes away.
            let channel = context.channel
            written.futureResult
                .flatMap { channel.close(mode: .output) }
                .whenFailure { _ in channel.close(promise: nil) }
        case .abort:
            _ = machine.connectionClosed(.aborted)
            context.close(promise: nil)
        }
    }

    private func write(_ command: Command, promise: EventLoopPromise<Void>? = nil) {
        guard let context,
            let buffer = encodedLine(
                command, maxLength: configuration.protocolLimits.maxLineLength, allocator: context.channel.allocator)
        else {
            promise?.succeed()
            return
        }
        writeBuffer(buffer, promise: promise)
    }

    private func writeRows(_ lines: ByteBuffer, count: Int) {
        writeBuffer(lines)
        machine.rowsWritten(count, now: clock.monotonicMillis)
    }

    /// Every write goes through here: it marks the connection for a flush and its queues as possibly full.
    private func writeBuffer(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>? = nil) {
        guard let context else {
            promise?.succeed()
            return
        }
        context.write(wrapOutboundOut(buffer), promise: promise)
        needsFlush = true
        sendQueuesMayHoldBytes = true
    }

    private func flushIfNeeded() {
        guard needsFlush, let context else { return }
        needsFlush = false
        context.flush()
    }

    /// Flushes after the tasks already queued on this loop: acknowledgements completing together (a
    /// group commit, a read full of rows) leave in one write instead of one each.
    private func flushSoon() {
        guard needsFlush, !flushScheduled, let context else { return }
        flushScheduled = true
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            this.value.flushScheduled = false
            this.value.flushIfNeeded()
        }
    }

    // MARK: Commands.

    private func dispatch(_ command: Command) {
        switch command {
        case .name(let name):
            logger[metadataKey: "name"] = "\(name)"
            logger.info("connection named", metadata: ["writer": "\(machine.isWriter)"])
        case .error(let text):
            logger.error("remote reported error", metadata: ["error": "\(text)"])
        case .replicate(let stream, let from):
            replicate(stream, from: from)
        case .userSync(let user, let state, _):
            hub.count { $0.userSync += 1 }
            if state == .start { syncingUsers.insert(user) } else { syncingUsers.remove(user) }
            hub.upstream?.forward(command)
        case .federationAck(let token):
            hub.count {
                $0.federationAck += 1
                $0.lastFederationAck = token
            }
            hub.upstream?.forward(command)
        case .removePusher(let appID, let pushKey, let userID):
            hub.count { $0.removePusher += 1 }
            if let upstream = hub.upstream {
                upstream.forward(command)
            } else {
                let row = JSONText.array([userID, appID, pushKey].map(JSONText.string) + ["true"])
                appendServerRow(row, to: .pushers)
            }
        case .invalidateCache(let function, let keys):
            hub.count { $0.invalidateCache += 1 }
            if let upstream = hub.upstream {
                upstream.forward(command)
            } else {
                appendServerRow(JSONText.array([JSONText.string(function), keys, String(clock.wallMillis)]), to: .caches)
            }
        case .userIP:
            hub.count { $0.userIP += 1 }
            hub.upstream?.forward(command)
        case .rdata(let stream, let token, let row):
            if let rejection = ingest.row(named: stream, token: token, row: row) { rejectWriterLine(rejection) }
        case .position(let stream, let token):
            if let rejection = ingest.position(named: stream, token: token) { rejectWriterLine(rejection) }
        case .server, .ping, .sync:
            // The machine never dispatches these to a server.
            break
        }
    }

    private func rejectWriterLine(_ rejection: ClosingError) {
        hub.count { $0.writerRejections += 1 }
        run(machine.fail(rejection, now: clock.monotonicMillis))
    }

    private func replicate(_ name: String, from: ReplicateFrom) {
        if name == "ALL" {
            for stream in StreamName.all { subscribe(stream, from: from) }
        } else if let stream = StreamName(name) {
            subscribe(stream, from: from)
        } else {
            run(machine.fail(.unknownStream(name), now: clock.monotonicMillis))
            return
        }
        pump()
    }

    private func subscribe(_ stream: StreamName, from: ReplicateFrom) {
        catchUpQueue.removeAll { $0 == stream }
        backfills[stream] = nil
        switch from {
        case .now:
            let current = hub.log.currentToken(of: stream)
            subscriptions[stream.index] = .live(at: current)
            run(machine.send(.position(stream: stream.rawValue, token: current), now: clock.monotonicMillis))
        case .token(let token):
            subscriptions[stream.index] = .replicating(after: token)
            catchUpQueue.append(stream)
        }
        fanout?.subscribe(self, to: stream)
    }

    private func appendServerRow(_ row: String, to stream: StreamName) {
        guard let context else { return }
        hub.append([row], to: stream, token: .next, on: context.eventLoop).whenFailure { [logger] error in
            logger.error("could not append row", metadata: ["stream": "\(stream)", "error": "\(error)"])
        }
    }

    /// Appends the writer's batches completed so far (one append for all the rows of a read) and
    /// acknowledges each with `POSITION` once stored.
    private func submitWriterAppends() {
        guard !ingest.isEmpty, let context else { return }
        let submitted = ingest.take()
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        hub.append(submitted.map(\.batch), on: context.eventLoop).whenComplete { outcome in
            this.value.writerAppendsCompleted(outcome, submitted)
        }
    }

    private func writerAppendsCompleted(
        _ outcome: Result<AppendResults, any Error>, _ submitted: [(batch: NewBatch, command: CommandName)]
    ) {
        guard let context else { return }
        let now = clock.monotonicMillis
        let results = (try? outcome.get()) ?? [.failure(.storage("\(outcome)"))]
        // A run is one append of many one-row batches: counted, and acknowledged, batch by batch.
        let stored = zip(results, submitted).reduce(0) { sum, pair in
            guard case .success = pair.0 else { return sum }
            return sum + max(pair.1.batch.rowTokens.count, 1)
        }
        if stored > 0 { hub.count { $0.writerAppends += stored } }
        // The acknowledgements of one append leave as one buffer: a writer streaming rows gets hundreds.
        var acks = context.channel.allocator.buffer(capacity: stored * 24)
        func writeAcks() {
            guard acks.readableBytes > 0 else { return }
            writeBuffer(acks)
            acks.clear()
        }
        // While the connection takes writes, acknowledgements go straight into the buffer and are counted
        // once at the end; otherwise each goes through the machine, which queues it.
        let direct = machine.isEstablished
        var written = 0
        for (result, (batch, command)) in zip(results, submitted) {
            switch result {
            case .success(let appended):
                for token in batch.rowTokens.isEmpty ? [appended.token] : batch.rowTokens {
                    if direct, appendPosition(stream: appended.stream, token: token, to: &acks) {
                        written += 1
                        continue
                    }
                    writeAcks()
                    run(machine.send(.position(stream: appended.stream.rawValue, token: token), now: now))
                }
            case .failure(let error):
                writeAcks()
                let why: String
                if case .tokenNotAfterCurrent(let current) = error {
                    why = "token must be greater than the stream's current token \(current)"
                } else {
                    why = "not stored: \(error)"
                }
                guard case .exactly(let token) = batch.firstToken else { continue }
                rejectWriterLine(.writerRejected(command, stream: batch.stream.rawValue, token: String(token), why))
            }
        }
        if written > 0 { machine.recordSent(.POSITION, count: written, now: now) }
        writeAcks()
        flushSoon()
    }

    /// Appends `POSITION <stream> <token>` to `buffer`; false if it is longer than the line limit.
    private func appendPosition(stream: StreamName, token: Int64, to buffer: inout ByteBuffer) -> Bool {
        let prefix = Self.positionPrefixes[stream.index]
        guard prefix.count + decimalWidth(token) <= configuration.protocolLimits.maxLineLength else { return false }
        // A writer gets one of these per batch: the prefix is copied, the digits written in place.
        buffer.writeBytes(prefix)
        buffer.writeDecimal(token)
        buffer.writeInteger(UInt8(ascii: "\n"))
        return true
    }

    /// `POSITION <stream> ` for every stream, by index.
    private static let positionPrefixes = StreamName.all.map { Array("POSITION \($0.rawValue) ".utf8) }

    // MARK: Catch-up.

    private func queueCatchUp(_ stream: StreamName) {
        if backfills[stream] == nil, !catchUpQueue.contains(stream) { catchUpQueue.append(stream) }
    }

    /// Relay mode: the rows the log no longer (or never) had come from upstream, then the log takes over.
    private func backfill(_ stream: StreamName, after cursor: Int64, through: Int64, from upstream: any Upstream) {
        guard let context else { return }
        backfillsStarted += 1
        let id = backfillsStarted
        backfills[stream] = id
        logger.info("fetching rows older than the log from upstream", metadata: ["stream": "\(stream)", "after": "\(cursor)"])
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        upstream.backfill(stream, after: cursor, through: through, on: context.eventLoop).whenComplete { result in
            this.value.backfilled(result, stream: stream, id: id)
        }
    }

    private func backfilled(_ result: Result<LogPage, any Error>, stream: StreamName, id: Int) {
        // A new REPLICATE for the stream while this was under way makes it stale.
        guard backfills[stream] == id else { return }
        backfills[stream] = nil
        guard var subscription = subscriptions[stream.index], context != nil else { return }
        switch result {
        case .success(let page):
            if page.rowCount > 0 { writeRows(page.lines, count: page.rowCount) }
            _ = subscription.pageWritten(endToken: page.endToken, reachedHead: false)
            subscriptions[stream.index] = subscription
            queueCatchUp(stream)
            pump()
        case .failure(let error):
            logger.warning("upstream could not provide older rows", metadata: ["stream": "\(stream)", "error": "\(error)"])
            run(machine.fail(.fallenBehind(stream), now: clock.monotonicMillis))
        }
        flushIfNeeded()
    }

    /// Reads from the log for every catching-up subscription while the connection takes writes.
    private func pump() {
        guard !pumping else {
            pumpAgain = true
            return
        }
        pumping = true
        defer { pumping = false }
        repeat {
            pumpAgain = false
            while let context, machine.isEstablished, context.channel.isWritable, let stream = catchUpQueue.first {
                guard var subscription = subscriptions[stream.index], subscription.isCatchingUp else {
                    catchUpQueue.removeFirst()
                    continue
                }
                let page: LogPage
                do {
                    page = try hub.log.read(
                        stream, after: subscription.cursor, maxBytes: configuration.catchUpPageBytes)
                } catch .fallenBehind(let oldestServable) {
                    guard let upstream = hub.upstream else {
                        run(machine.fail(.fallenBehind(stream), now: clock.monotonicMillis))
                        return
                    }
                    catchUpQueue.removeFirst()
                    backfill(stream, after: subscription.cursor, through: oldestServable, from: upstream)
                    continue
                } catch {
                    run(machine.fail(.replicateFailed(stream, error), now: clock.monotonicMillis))
                    return
                }
                if page.rowCount > 0 { writeRows(page.lines, count: page.rowCount) }
                let announce = subscription.pageWritten(endToken: page.endToken, reachedHead: page.reachedHead)
                subscriptions[stream.index] = subscription
                if page.reachedHead { catchUpQueue.removeFirst() }
                if announce {
                    run(machine.send(.position(stream: stream.rawValue, token: page.endToken), now: clock.monotonicMillis))
                }
            }
            // Flushing may make the channel writable again, which asks for another round.
            flushIfNeeded()
        } while pumpAgain
    }
}

/// `host:port` for logs.
func describe(_ address: SocketAddress) -> String {
    guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
    return address.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
}
