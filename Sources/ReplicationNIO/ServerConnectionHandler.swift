import Logging
import NIOCore
import ReplicationCore
import StreamLog

/// One client connection on the server: the I/O around a ``ServerSession``. Each channel or hub event is
/// handed to the session, and every action it answers with, every write included, is performed by
/// ``run(_:)``. After each event the session is asked for the next page of catch-up, which is read away
/// from the event loop.
///
/// It splits its own lines (``ConnectionInput``) rather than taking one pipeline event per line, and takes
/// a writer's rows on their bytes: a writer sends hundreds of lines per read, and the per-event cost was a
/// fifth of ingesting a row.
final class ServerConnectionHandler: ChannelInboundHandler, HubConnection {
    typealias InboundIn = ByteBuffer
    typealias Action = ServerSession<ByteBuffer>.Action

    private var session: ServerSession<ByteBuffer>
    private var input: ConnectionInput
    private let hub: ReplicationHub
    private let reads: CatchUpReads
    private let secretCheck: WriterSecretCheck
    private let configuration: ServerConfiguration
    private let clock: ConnectionClock
    private var log: ConnectionLog
    private var context: ChannelHandlerContext?
    private var fanout: LoopFanout?
    private var keepaliveTask: RepeatedTask?
    private let output: ConnectionOutput
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
        self.session = configuration.session(routing: hub.routing, now: clock.monotonicMillis)
        self.input = ConnectionInput(configuration: configuration.protocolLimits, head: hub.log.currentToken(of:))
        self.reads = CatchUpReads(hub: hub, pageBytes: configuration.catchUpPageBytes)
        self.secretCheck = WriterSecretCheck(configuration)
        self.output = ConnectionOutput(maxLineLength: configuration.protocolLimits.maxLineLength)
    }

    // MARK: Channel events.

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        closeFuture = context.channel.closeFuture
        connectedAtMillis = clock.wallMillis
        output.connectionActive(context)
        peer = context.remoteAddress.map(describe) ?? "unknown"
        fanout = hub.fanout(on: context.eventLoop)
        fanout?.add(self)
        log.opened(peer: peer)
        handle(session.connectionActive(now: clock.monotonicMillis, wallMillis: clock.wallMillis))
        let interval = TimeAmount.milliseconds(configuration.protocolLimits.pingIntervalMillis)
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        keepaliveTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            this.value.keepaliveTick()
        }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let name = TransportSecurity.certifiedClientName(after: event, on: context.pipeline) {
            session.peerCertified(as: name)
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func keepaliveTick() { handle(session.tick(now: clock.monotonicMillis, wallMillis: clock.wallMillis)) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        process(unwrapInboundIn(data))
    }

    /// Lines from the peer, up to one that must be answered before what follows it is read (an `AUTH`, a
    /// re-sent batch): what follows waits, kept unread.
    private func process(_ read: ByteBuffer) {
        guard let context else { return }
        var bytes = input.begin(read)
        let now = clock.monotonicMillis
        while !session.holdsLines, let next = input.next(&bytes, takingWriterRows: session.takesWriterRows) {
            switch next {
            case .line(let text):
                run(
                    session.lineReceived(
                        text[...], now: now, wallMillis: clock.wallMillis, head: hub.log.currentToken(of:)))
            case .lineRejected(let error): run(session.lineRejected(error, now: now))
            case .writerRows(let count): session.writerRowsReceived(count, now: now)
            case .writerRowRejected(let rejection): run(session.writerLineRejected(rejection, now: now))
            }
        }
        input.end(&bytes, allocator: context.channel.allocator)
    }

    /// What was held back while a line was answered is read now.
    private func readHeldLines() {
        guard let context else { return }
        process(context.channel.allocator.buffer(capacity: 0))
        submitWriterAppends()
        eventHandled()
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
        keepaliveTask.take()?.cancel()
        fanout.take()?.retire(self)  // its command counts outlive it
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
        case .write(let command): output.write(command, to: context)
        case .writeRows(let lines, _): output.write(lines, to: context)
        case .acknowledge(let positions): output.write(positions, to: context)
        case .submitWriterBatches: submitWriterAppends()
        case .ingest(let command):
            if let rejection = input.take(command) {
                run(session.writerLineRejected(rejection, now: clock.monotonicMillis))
            }
        case .writeErrorAndClose(let error, let reason):
            if reason == .writerRejected { hub.count { $0.writerRejections += 1 } }
            log.closing(with: error)
            output.writeLastLine(error, to: context)
        case .abort: context.close(promise: nil)
        case .joinFanout(let stream): fanout?.subscribe(self, to: stream)
        case .leaveFanout: fanout?.remove(self)
        case .readPage(let stream, let after):
            reads.page(stream, after: after, log: log, on: context.eventLoop).assumeIsolated().whenSuccess { [self] in
                handle(session.pageRead(stream, after: after, $0, now: clock.monotonicMillis))
            }
        case .fetchOlderRows(let stream, let after, let through, let request):
            reads.olderRows(stream, after: after, through: through, log: log, on: context.eventLoop)
                .assumeIsolated().whenSuccess { [self] in
                    handle(session.olderRowsFetched(stream, request: request, $0, now: clock.monotonicMillis))
                }
        case .count(let command): hub.count { $0.count(command) }
        case .appendRow(let stream, let row):
            hub.append([row], to: stream, token: .next, on: context.eventLoop).whenFailure { [log] in
                log.appendFailed(stream, $0)
            }
        case .forward(let command): hub.upstream?.forward(command)
        case .readFromPeer(let reading): setReading(reading, context: context)
        case .named(let name, let isWriter): log.named(name, isWriter: isWriter)
        case .verifySecret(let writer, let secret):
            setReading(false, context: context)
            secretCheck.verify(writer: writer, secret: secret, log: log, on: context.eventLoop)
                .assumeIsolated().whenSuccess { [self] in secretChecked($0) }
        case .writerAuthenticated(let writer): log.writerAuthenticated(writer)
        case .peerReportedError(let text): log.peerReportedError(text)
        }
    }

    /// An accepted writer is read from again, starting with the lines it sent while its secret was checked.
    private func secretChecked(_ succeeded: Bool) {
        run(session.secretVerified(succeeded, now: clock.monotonicMillis))
        guard succeeded, let context else { return eventHandled() }
        setReading(session.readsFromPeer, context: context)
        readHeldLines()
    }

    private func setReading(_ reading: Bool, context: ChannelHandlerContext) {
        do {
            try context.channel.syncOptions?.setOption(.autoRead, value: reading)
        } catch {
            log.readingNotChanged(error)
        }
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
        guard !input.ingest.isEmpty, !session.isCheckingResentBatch else { return }
        let bytes = input.ingest.completedBytes
        append(input.ingest.take(), bytes: bytes)
    }

    private func append(_ submitted: [WriterIngest.Submitted], bytes: Int) {
        guard let context, let stored = WriterIngest.append(submitted, to: hub, on: context.eventLoop) else { return }
        run(session.writerBatchesSubmitted(bytes: bytes))
        stored.assumeIsolated().whenSuccess { [self] stored in
            let now = clock.monotonicMillis
            run(session.writerBatchesStored(stored.positions, refusal: stored.refusal, bytes: bytes, now: now))
            if let resent = stored.resent { compare(resent) }
            // Acknowledgements completing together (a group commit) leave in one write.
            if let context = self.context { output.flushSoon(context) { [self] in eventHandled() } }
        }
    }

    /// A batch sent again after a lost connection, whose tokens the log already has: compared with what the
    /// log stores under them, while the writer's further lines wait (what follows must be stored after it).
    private func compare(_ resent: WriterIngest.Resent) {
        guard let context else { return }
        run(session.resentBatchCheckStarted())
        resent.compared(in: hub, pageBytes: configuration.catchUpPageBytes, on: context.eventLoop)
            .assumeIsolated().whenSuccess { [self] checked in
                let now = clock.monotonicMillis
                run(session.resentBatchChecked(checked.positions, refusal: checked.refusal, now: now))
                if checked.refusal == nil { append(resent.rest, bytes: 0) }
                readHeldLines()
            }
    }
}
