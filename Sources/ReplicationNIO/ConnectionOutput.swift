import NIOCore
import ReplicationCore

/// How the server writes to one connection. Every write marks the connection for a flush and its send
/// queues as possibly full; an event's writes leave in one flush; a close caused by a failed write is told
/// apart from a clean one. Confined to the connection's event loop.
final class ConnectionOutput {
    /// The transport failed: a write found the connection reset, or NIO reported an error.
    var transportFailed = false
    private var needsFlush = false
    private var flushScheduled = false
    /// Whether a write carrying ``watchForWriteFailure(_:)``'s promise is still queued.
    private var failureWatched = false
    private var sendQueues = SendQueueProbe()
    private let maxLineLength: Int

    init(maxLineLength: Int) { self.maxLineLength = maxLineLength }

    func connectionActive(_ context: ChannelHandlerContext) { sendQueues.borrowDescriptor(of: context) }

    /// The socket is gone: its descriptor must not be asked again.
    func connectionClosed() { sendQueues = SendQueueProbe() }

    func write(_ buffer: ByteBuffer, to context: ChannelHandlerContext, promise: EventLoopPromise<Void>? = nil) {
        context.write(NIOAny(buffer), promise: promise)
        needsFlush = true
        sendQueues.wrote()
    }

    /// Writes one command, unless its line would be longer than the limit.
    func write(_ command: Command, to context: ChannelHandlerContext) {
        if let line = encoded(command, context) { write(line, to: context) }
    }

    /// A writer's acknowledgements, many at once.
    func write(_ positions: [StreamPosition], to context: ChannelHandlerContext) {
        var lines = context.channel.allocator.buffer(capacity: positions.count * 24)
        lines.writePositions(positions)
        write(lines, to: context)
    }

    func flushIfNeeded(_ context: ChannelHandlerContext) {
        guard needsFlush else { return }
        needsFlush = false
        watchForWriteFailure(context)
        context.flush()
    }

    /// Flushes after the tasks already queued on this loop, through `eventHandled`: acknowledgements
    /// completing together (a group commit, a read full of rows) leave in one write instead of one each.
    func flushSoon(_ context: ChannelHandlerContext, through eventHandled: @escaping () -> Void) {
        guard needsFlush, !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute { [self] in
            flushScheduled = false
            eventHandled()
        }
    }

    /// Writes the connection's last line and half-closes once it is out, so that the peer reads it before
    /// EOF instead of a reset; the keepalive aborts the connection if the peer never goes away.
    func writeLastLine(_ command: Command, to context: ChannelHandlerContext) {
        let written = context.eventLoop.makePromise(of: Void.self)
        if let line = encoded(command, context) {
            write(line, to: context, promise: written)
        } else {
            written.succeed()
        }
        needsFlush = false
        context.flush()
        let channel = context.channel
        written.futureResult
            .flatMap { channel.close(mode: .output) }
            .whenFailure { _ in channel.close(promise: nil) }
    }

    /// Bytes unread in the kernel, unsent in the kernel, and buffered in NIO; zero once the channel is gone.
    func sampleQueues(_ channel: (any Channel)?) -> (unread: Int, unsent: Int, buffered: Int) {
        sendQueues.sample(channel)
    }

    private func encoded(_ command: Command, _ context: ChannelHandlerContext) -> ByteBuffer? {
        encodedLine(command, maxLength: maxLineLength, allocator: context.channel.allocator)
    }

    /// NIO closes a channel whose write fails (a peer that reset the connection, found by a write) without
    /// `errorCaught`, failing the writes still queued. An empty write at the end of the queue, with a
    /// promise, is how such a close is told apart from a clean one (one outstanding at a time).
    private func watchForWriteFailure(_ context: ChannelHandlerContext) {
        guard !failureWatched else { return }
        failureWatched = true
        let watch = context.eventLoop.makePromise(of: Void.self)
        watch.futureResult.assumeIsolated().whenComplete { [self] result in
            failureWatched = false
            if case .failure(let error) = result, error is IOError { transportFailed = true }
        }
        context.write(NIOAny(ByteBuffer()), promise: watch)
    }
}
