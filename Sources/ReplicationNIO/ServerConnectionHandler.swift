import Logging
import NIOCore
import NIOPosix
import ReplicationCore
import StreamLog

/// One client connection on the server: the I/O around a ``ServerSession``. Each channel or hub event is
/// handed to the session, and every action it answers with, every write included, is performed by
/// ``run(_:)``. After each event the session is asked for the next page of catch-up, which is read away
/// from the event loop.
///
/// It splits its own lines (``LineFramer``) rather than taking one pipeline event per line, and takes a
/// writer's rows on their bytes (``WriterIngest``): a writer sends hundreds of lines per read, and the
/// per-event cost was a fifth of ingesting a row.
final class ServerConnectionHandler: ChannelInboundHandler, HubConnection {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    typealias Action = ServerSession<ByteBuffer>.Action

    private var session: ServerSession<ByteBuffer>
    private var ingest: WriterIngest
    private var framer: LineFramer
    private var unfinishedLine = UnfinishedLine()
    private let hub: ReplicationHub
    private let configuration: ServerConfiguration
    private let clock: ConnectionClock
    private var log: ConnectionLog
    private var context: ChannelHandlerContext?
    private var fanout: LoopFanout?
    private var keepaliveTask: RepeatedTask?
    private let output = ConnectionOutput()
    /// Set while ``eventHandled()`` asks for pages, so that a page read at once does not recurse.
    private var continuingCatchUp = false
    private var peer = "unknown"
    private var connectedAtMillis: Int64 = 0
    private var closeFuture: EventLoopFuture<Void>?

    init(hub: ReplicationHub, configuration: ServerConfiguration, clock: ConnectionClock, log: ConnectionLogGate) {
        self.hub = hub
        self.configuration = configuration
        self.clock = clock
        self.log = ConnectionLog(log)
        self.session = ServerSession(
            serverName: configuration.serverName, writers: configuration.writers,
            writersWithCredentials: configuration.writerCredentials.map { Set($0.hashes.keys) } ?? [],
            configuration: configuration.protocolLimits, routing: hub.routing, now: clock.monotonicMillis)
        self.framer = LineFramer(maxLineLength: configuration.protocolLimits.maxLineLength)
        // A writer's batches completed during the current read, appended together when it ends.
        self.ingest = WriterIngest(configuration: configuration.protocolLimits, allocator: ByteBufferAllocator())
    }

    // MARK: Channel events.

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        closeFuture = context.channel.closeFuture
        connectedAtMillis = clock.wallMillis
        output.connectionActive(context)
        peer = context.remoteAddress.map(describe) ?? "unknown"
        let fanout = hub.fanout(on: context.eventLoop)
        fanout.add(self)
        self.fanout = fanout
        log.opened(peer: peer)
        handle(session.connectionActive(now: clock.monotonicMillis, wallMillis: clock.wallMillis))
        let interval = TimeAmount.milliseconds(configuration.protocolLimits.pingIntervalMillis)
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        keepaliveTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            this.value.keepaliveTick()
        }
        context.fireChannelActive()
    }

    private func keepaliveTick() { handle(session.tick(now: clock.monotonicMillis, wallMillis: clock.wallMillis)) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        process(unwrapInboundIn(data))
    }

    /// Lines from the peer, up to an `AUTH` being verified: what follows it waits, kept unread, until
    /// the writer may write.
    private func process(_ read: ByteBuffer) {
        guard let context else { return }
        var bytes = unfinishedLine.prepended(to: read)
        let now = clock.monotonicMillis
        while !session.holdsLines, let frame = nextGeneralFrame(&bytes, now: now) {
            switch frame.text() {
            case .failure(let error):
                run(session.lineRejected(error, now: now))
            case .success(let text):
                run(
                    session.lineReceived(
                        text[...], now: now, wallMillis: clock.wallMillis, head: hub.log.currentToken(of:)))
            }
        }
        unfinishedLine.keep(&bytes, allocator: context.channel.allocator)
    }

    /// The next line for the general path. A writer's rows in their common form are taken on the way,
    /// many per call: one access to the handler's state per run of rows, not several per row.
    private func nextGeneralFrame(_ bytes: inout ByteBuffer, now: Int64) -> InboundFrame? {
        while session.takesWriterRows {
            let (taken, stop) = ingest.takeRows(from: &bytes, framer: &framer, head: hub.log.currentToken(of:))
            if taken > 0 { session.writerRowsReceived(taken, now: now) }
            switch stop {
            case nil: return nil
            case .generalPath(let frame): return frame
            case .rejected(let rejection): run(session.writerLineRejected(rejection, now: now))
            }
        }
        return framer.nextFrame(&bytes)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        submitWriterAppends()
        eventHandled()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        handle(session.writabilityChanged(isWritable: context.channel.isWritable, now: clock.monotonicMillis))
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        output.transportFailed = true
        log.transportError(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let (reason, actions) = session.connectionClosed(
            output.transportFailed ? .failed : .closedByPeer, wallMillis: clock.wallMillis)
        run(actions)
        output.connectionClosed()
        keepaliveTask?.cancel()
        keepaliveTask = nil
        fanout?.retire(self)  // its command counts outlive it
        fanout = nil
        hub.count { $0.closeReasons[reason, default: 0] += 1 }
        log.closed(reason)
        self.context = nil
        context.fireChannelInactive()
    }

    // MARK: Hub and log events (on this event loop).

    func deliver(_ batches: [AppendedBatch], joined: AppendedBatch?) {
        guard let context else { return }
        let now = clock.monotonicMillis
        handle(session.batchesAppended(batches, joined: joined, isWritable: context.channel.isWritable, now: now))
    }

    func shutDown(grace: TimeAmount) -> EventLoopFuture<Void> {
        run(session.shutDown(now: clock.monotonicMillis))
        if let context {
            let abort = context.eventLoop.assumeIsolated().scheduleTask(in: grace) { [self] in run(session.abort()) }
            closeFuture?.whenComplete { _ in abort.cancel() }
        }
        return closeFuture!
    }

    private func pageRead(_ stream: StreamName, after: Int64, _ result: Result<LogPage, any Error>) {
        let read = StreamLogError.pageRead(result)
        if case .failed(let why) = read {
            hub.count { $0.storageReadErrors += 1 }
            log.readFailed(stream, after: after, why)
        }
        handle(session.pageRead(stream, after: after, read, now: clock.monotonicMillis))
    }

    private func olderRowsFetched(_ stream: StreamName, request: Int, _ result: Result<LogPage, any Error>) {
        if case .failure(let error) = result { log.olderRowsUnavailable(stream, error) }
        let now = clock.monotonicMillis
        handle(session.olderRowsFetched(stream, request: request, StreamLogError.pageRead(result), now: now))
    }

    private func writerAppendsCompleted(
        _ outcome: Result<AppendResults, any Error>, _ submitted: [WriterIngest.Submitted], bytes: Int
    ) {
        let (positions, refusal, resent) = WriterIngest.acknowledgements(of: outcome, submitted)
        if !positions.isEmpty { hub.count { $0.writerAppends += positions.count } }
        run(session.writerBatchesStored(positions, refusal: refusal, bytes: bytes, now: clock.monotonicMillis))
        if let resent { compare(resent) }
        // Acknowledgements completing together (a group commit) leave in one write.
        if let context { output.flushSoon(context) { [self] in eventHandled() } }
    }

    /// A batch sent again after a lost connection, whose tokens the log already has: compared with what the
    /// log stores under them, while the writer's further lines wait (what follows must be stored after it).
    private func compare(_ resent: WriterIngest.Resent) {
        guard let context else { return }
        run(session.resentBatchCheckStarted())
        hub.log.compare(
            resent.batch, pageBytes: configuration.catchUpPageBytes, patience: Self.resentBatchPatience,
            on: context.eventLoop
        ).assumeIsolated().whenComplete { [self] in resentBatchCompared(resent, $0) }
    }

    /// How long a re-sent batch waits for the rows it repeats to be committed (accepted from the writer's
    /// previous connection, their commit under way) before the writer is told to try again.
    static let resentBatchPatience = TimeAmount.seconds(30)

    private func resentBatchCompared(
        _ resent: WriterIngest.Resent, _ compared: Result<ResentBatch.Verdict, any Error>
    ) {
        let refusal = resent.refusal(compared)
        let positions = refusal == nil ? resent.batch.positions : []
        if refusal == nil { hub.count { $0.writerResentBatches += 1 } }
        run(session.resentBatchChecked(positions, refusal: refusal, now: clock.monotonicMillis))
        if refusal == nil { append(resent.rest, bytes: 0) }
        guard let context else { return }
        process(context.channel.allocator.buffer(capacity: 0))
        submitWriterAppends()
        eventHandled()
    }

    func snapshot() -> ConnectionSnapshot {
        let queues = output.sampleQueues(context?.channel)
        return session.snapshot(
            peer: peer, connectedAtMillis: connectedAtMillis, bufferedWritableBytes: queues.buffered,
            kernelSendQueue: queues.unsent, kernelReceiveQueue: queues.unread)
    }

    // MARK: The one place with side effects.

    /// An event's actions, then what follows every event.
    private func handle(_ actions: [Action]) {
        run(actions)
        eventHandled()
    }

    private func run(_ actions: [Action]) {
        for action in actions { run(action) }
    }

    private func run(_ action: Action) {
        guard let context else { return }
        switch action {
        case .write(let command):
            if let line = encoded(command, context) { output.write(line, to: context) }
        case .writeRows(let lines, _):
            output.write(lines, to: context)
        case .acknowledge(let positions):
            var acks = context.channel.allocator.buffer(capacity: positions.count * 24)
            acks.writePositions(positions)
            output.write(acks, to: context)
        case .submitWriterBatches:
            submitWriterAppends()
        case .ingest(let command):
            if let rejection = ingest.take(command, head: hub.log.currentToken(of:)) {
                run(session.writerLineRejected(rejection, now: clock.monotonicMillis))
            }
        case .writeErrorAndClose(let error, let reason):
            if reason == .writerRejected { hub.count { $0.writerRejections += 1 } }
            log.closing(with: error)
            output.writeLastLine(encoded(error, context), to: context)
        case .abort:
            context.close(promise: nil)
        case .joinFanout(let stream):
            fanout?.subscribe(self, to: stream)
        case .leaveFanout:
            fanout?.remove(self)
        case .readPage(let stream, let after):
            hub.log.read(stream, after: after, maxBytes: configuration.catchUpPageBytes, on: context.eventLoop)
                .assumeIsolated().whenComplete { [self] in pageRead(stream, after: after, $0) }
        case .fetchOlderRows(let stream, let after, let through, let request):
            log.fetchingOlderRows(stream, after: after)
            hub.olderRows(stream, after: after, through: through, on: context.eventLoop)
                .assumeIsolated().whenComplete { [self] in olderRowsFetched(stream, request: request, $0) }
        case .count(let command):
            hub.count { $0.count(command) }
        case .appendRow(let stream, let row):
            hub.append([row], to: stream, token: .next, on: context.eventLoop).whenFailure { [log] in
                log.appendFailed(stream, $0)
            }
        case .forward(let command):
            hub.upstream?.forward(command)
        case .readFromPeer(let reading):
            setReading(reading, context: context)
        case .named(let name, let isWriter):
            log.named(name, isWriter: isWriter)
        case .verifySecret(let writer, let secret):
            verify(writer: writer, secret: secret, context: context)
        case .writerAuthenticated(let writer):
            log.writerAuthenticated(writer)
        case .peerReportedError(let text):
            log.peerReportedError(text)
        }
    }

    /// Checks an `AUTH` secret on the thread pool (bcrypt is slow on purpose) while nothing more is read
    /// from the peer; a wrong one is answered only after ``ServerConfiguration/authenticationFailureDelay``.
    private func verify(writer: String, secret: String, context: ChannelHandlerContext) {
        setReading(false, context: context)
        let credentials = configuration.writerCredentials
        NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop) {
            credentials?.verify(name: writer, password: secret) ?? false
        }.assumeIsolated().whenComplete { [self] result in
            secretChecked(writer: writer, succeeded: (try? result.get()) ?? false)
        }
    }

    private func secretChecked(writer: String, succeeded: Bool) {
        guard let context else { return }
        guard succeeded else {
            // Counted when the connection ends, under its close reason `authentication_failed`.
            log.wrongSecret(writer: writer)
            context.eventLoop.assumeIsolated().scheduleTask(in: configuration.authenticationFailureDelay) { [self] in
                handle(session.secretVerified(false, now: clock.monotonicMillis))
            }
            return
        }
        run(session.secretVerified(true, now: clock.monotonicMillis))
        setReading(session.readsFromPeer, context: context)
        process(context.channel.allocator.buffer(capacity: 0))
        submitWriterAppends()
        eventHandled()
    }

    private func setReading(_ reading: Bool, context: ChannelHandlerContext) {
        do {
            try context.channel.syncOptions?.setOption(.autoRead, value: reading)
        } catch {
            log.readingNotChanged(error)
        }
    }

    private func encoded(_ command: Command, _ context: ChannelHandlerContext) -> ByteBuffer? {
        encodedLine(
            command, maxLength: configuration.protocolLimits.maxLineLength, allocator: context.channel.allocator)
    }

    /// After every event: flush what it wrote, then read catch-up pages while the connection takes writes
    /// (a page read at once is written at once; one read from disk completes later, as an event of its own).
    private func eventHandled() {
        guard let context else { return }
        output.flushIfNeeded(context)
        guard !continuingCatchUp else { return }
        continuingCatchUp = true
        defer { continuingCatchUp = false }
        while self.context != nil, let read = session.nextRead(isWritable: context.channel.isWritable) {
            run(read)
            output.flushIfNeeded(context)
        }
    }

    /// Appends the writer's batches completed so far (one append for all the rows of a read) and
    /// acknowledges each with `POSITION` once stored; not while a re-sent batch is compared, since these
    /// must be stored after it.
    private func submitWriterAppends() {
        guard !ingest.isEmpty, !session.isCheckingResentBatch else { return }
        let bytes = ingest.completedBytes
        append(ingest.take(), bytes: bytes)
    }

    private func append(_ submitted: [WriterIngest.Submitted], bytes: Int) {
        guard !submitted.isEmpty, let context else { return }
        run(session.writerBatchesSubmitted(bytes: bytes))
        hub.append(submitted.map(\.batch), on: context.eventLoop).assumeIsolated().whenComplete { [self] outcome in
            writerAppendsCompleted(outcome, submitted, bytes: bytes)
        }
    }
}
