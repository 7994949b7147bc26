import Logging
import NIOCore
import ReplicationCore
import StreamLog

/// One client connection on the server: the I/O around a ``ServerSession``. Each channel or hub event is
/// handed to the session, and every action it answers with, every write included, is performed by
/// ``run(_:)``. After each event the session is asked for the next page of catch-up, which is read away
/// from the event loop.
final class ServerConnectionHandler: ChannelInboundHandler, HubConnection {
    typealias InboundIn = ByteBuffer
    typealias Action = ServerSession<ByteBuffer>.Action

    private var session: ServerSession<ByteBuffer>
    private var input: ConnectionInput
    private let hub: ReplicationHub
    private let reads: CatchUpReads
    private let secretCheck: WriterSecretCheck
    private let clock: ConnectionClock
    private var log: ConnectionLog
    private var context: ChannelHandlerContext?
    private var fanout: LoopFanout?
    private var keepalive: KeepaliveTimer
    private let output: ConnectionOutput
    /// Set while ``eventHandled()`` asks for pages, so that a page read at once does not recurse.
    private var continuingCatchUp = false
    private var peer = "unknown"
    private var connectedAtMillis: Int64 = 0
    private var closeFuture: EventLoopFuture<Void>?

    init(hub: ReplicationHub, configuration: ServerConfiguration, clock: ConnectionClock, log: ConnectionLogGate) {
        self.hub = hub
        self.clock = clock
        self.log = ConnectionLog(log)
        self.session = configuration.session(routing: hub.routing, now: clock.monotonicMillis)
        self.input = ConnectionInput(configuration: configuration.protocolLimits, head: hub.log.currentToken(of:))
        self.reads = CatchUpReads(hub: hub, pageBytes: configuration.catchUpPageBytes)
        self.secretCheck = WriterSecretCheck(configuration)
        self.output = ConnectionOutput(maxLineLength: configuration.protocolLimits.maxLineLength)
        self.keepalive = KeepaliveTimer(every: .milliseconds(configuration.protocolLimits.pingIntervalMillis))
    }

    /// Monotonic milliseconds, which every timeout of the session is counted in.
    private var now: Int64 { clock.monotonicMillis }

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
        handle(session.connectionActive(now: now, wallMillis: clock.wallMillis))
        keepalive.start(on: context.eventLoop) { [self] in
            handle(session.tick(now: now, wallMillis: clock.wallMillis))
        }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let name = TransportSecurity.certifiedClientName(after: event, on: context.pipeline) {
            session.peerCertified(as: name)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { process(unwrapInboundIn(data)) }

    /// Lines from the peer, up to one that must be answered before what follows it is read (an `AUTH`, a
    /// re-sent batch): what follows waits, kept unread.
    private func process(_ read: ByteBuffer) {
        guard let context else { return }
        var bytes = input.begin(read)
        let now = clock.monotonicMillis
        while !session.holdsLines, let next = input.next(&bytes, takingWriterRows: session.takesWriterRows) {
            switch next {
            case .line(let text):
                run(session.lineReceived(text[...], now: now, wallMillis: clock.wallMillis, head: hub.log.currentToken))
            case .lineRejected(let error): run(session.lineRejected(error, now: now))
            case .writerRows(let count): session.writerRowsReceived(count, now: now)
            case .writerRowRejected(let rejection): run(session.writerLineRejected(rejection, now: now))
            }
        }
        input.end(&bytes, allocator: context.channel.allocator)
    }

    /// What was held back while a line was answered is read now.
    private func readHeldLines() {
        process(ByteBuffer())
        submitWriterAppends()
        eventHandled()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        submitWriterAppends()
        eventHandled()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        handle(session.writabilityChanged(isWritable: context.channel.isWritable, now: now))
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
        keepalive.stop()
        fanout.take()?.retire(self)  // its command counts outlive it
        hub.count { $0.closeReasons[reason, default: 0] += 1 }
        log.closed(reason)
        self.context = nil
        context.fireChannelInactive()
    }

    // MARK: Hub and log events (on this event loop).

    func deliver(_ batches: [AppendedBatch], joined: AppendedBatch?) {
        guard let context else { return }
        handle(session.batchesAppended(batches, joined: joined, isWritable: context.channel.isWritable, now: now))
    }

    func shutDown(grace: TimeAmount) -> EventLoopFuture<Void> {
        run(session.shutDown(now: now))
        let abort = context?.eventLoop.assumeIsolated().scheduleTask(in: grace) { [self] in run(session.abort()) }
        closeFuture?.whenComplete { _ in abort?.cancel() }
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
            if let rejection = input.take(command) { run(session.writerLineRejected(rejection, now: now)) }
        case .writeErrorAndClose(let error, let reason):
            if reason == .writerRejected { hub.count { $0.writerRejections += 1 } }
            log.closing(with: error)
            output.writeLastLine(error, to: context)
        case .abort: context.close(promise: nil)
        case .joinFanout(let stream): fanout?.subscribe(self, to: stream)
        case .leaveFanout: fanout?.remove(self)
        case .readPage(let stream, let after):
            reads.page(stream, after: after, log: log, on: context.eventLoop).assumeIsolated().whenSuccess { [self] in
                handle(session.pageRead(stream, after: after, $0, now: now))
            }
        case .fetchOlderRows(let stream, let after, let through, let request):
            reads.olderRows(stream, after: after, through: through, log: log, on: context.eventLoop)
                .assumeIsolated().whenSuccess { [self] in
                    handle(session.olderRowsFetched(stream, request: request, $0, now: now))
                }
        case .count(let command): hub.count { $0.count(command) }
        case .appendRow(let stream, let row):
            hub.append([row], to: stream, token: .next, on: context.eventLoop).whenFailure { [log] in
                log.appendFailed(stream, $0)
            }
        case .forward(let command): hub.upstream?.forward(command)
        case .readFromPeer(let reading): input.setReading(reading, of: context.channel, log: log)
        case .named(let name, let isWriter): log.named(name, isWriter: isWriter)
        case .verifySecret(let writer, let secret):
            secretCheck.verify(writer: writer, secret: secret, log: log, on: context.eventLoop)
                .assumeIsolated().whenSuccess { [self] in handle(session.secretVerified($0, now: now)) }
        case .writerAuthenticated(let writer): log.writerAuthenticated(writer)
        case .readHeldLines: readHeldLines()
        case .peerReportedError(let text): log.peerReportedError(text)
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
        guard !session.isCheckingResentBatch, let (batches, bytes) = input.takeCompletedBatches() else { return }
        append(batches, bytes: bytes)
    }

    private func append(_ submitted: [WriterIngest.Submitted], bytes: Int) {
        guard let context, let stored = WriterIngest.append(submitted, to: hub, on: context.eventLoop) else { return }
        run(session.writerBatchesSubmitted(bytes: bytes))
        stored.assumeIsolated().whenSuccess { [self] stored in
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
        resent.compared(in: hub, pageBytes: reads.pageBytes, on: context.eventLoop)
            .assumeIsolated().whenSuccess { [self] checked in
                run(session.resentBatchChecked(checked.positions, refusal: checked.refusal, now: now))
                if checked.refusal == nil { append(resent.rest, bytes: 0) }
                readHeldLines()
            }
    }
}
