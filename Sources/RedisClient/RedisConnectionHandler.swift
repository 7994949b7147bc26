import DequeModule
import NIOCore

/// A message published on a channel this connection subscribed to.
public struct RedisMessage: Sendable, Equatable {
    public var channel: String
    public var payload: [UInt8]

    public init(channel: String, payload: [UInt8]) {
        self.channel = channel
        self.payload = payload
    }
}

/// One Redis connection: pipelined commands answered in order, and, once subscribed, published messages.
/// A command that times out closes the connection: replies after it could no longer be matched.
final class RedisConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private struct Waiting {
        var promise: EventLoopPromise<RedisValue>
        var timeout: Scheduled<Void>?
    }

    private let reader = RESPReader()
    private let eventLoop: any EventLoop
    private let commandTimeout: TimeAmount
    private let onMessage: (RedisMessage) -> Void
    private var waiting = Deque<Waiting>()
    private var context: ChannelHandlerContext?
    /// After the first subscribe confirmation, `["message", channel, payload]` arrays are pushes, not replies.
    private var subscribed = false

    init(eventLoop: any EventLoop, commandTimeout: TimeAmount, onMessage: @escaping (RedisMessage) -> Void) {
        self.eventLoop = eventLoop
        self.commandTimeout = commandTimeout
        self.onMessage = onMessage
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        failAll(.connectionClosed)
    }

    /// Arguments at least this long are written as the buffers they are, not copied into the command's.
    private static let separateArgumentBytes = 4096

    /// Writes commands back to back and flushes once; each future gets its own reply.
    func send(_ commands: [[ByteBuffer]]) -> [EventLoopFuture<RedisValue>] {
        guard let context, context.channel.isActive else {
            return commands.map { _ in eventLoop.makeFailedFuture(RedisError.notConnected) }
        }
        var buffer = context.channel.allocator.buffer(capacity: 0)
        var futures: [EventLoopFuture<RedisValue>] = []
        let this = NIOLoopBound(self, eventLoop: eventLoop)
        for command in commands {
            RESPCommand.write(command, into: &buffer, separating: Self.separateArgumentBytes) { part in
                context.write(NIOAny(part), promise: nil)
            }
            let promise = context.eventLoop.makePromise(of: RedisValue.self)
            let timeout = context.eventLoop.scheduleTask(in: commandTimeout) { this.value.timedOut() }
            waiting.append(Waiting(promise: promise, timeout: timeout))
            futures.append(promise.futureResult)
        }
        context.writeAndFlush(NIOAny(buffer), promise: nil)
        return futures
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        do throws(RedisError) {
            try reader.feed(buffer)
            while let value = try reader.next() { deliver(value) }
        } catch {
            failAll(error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(.connectionFailed("\(error)"))
        context.close(promise: nil)
    }

    private func deliver(_ value: RedisValue) {
        if subscribed, case .array(let items) = value, items.count == 3, items[0].string == "message",
            let channel = items[1].string, let payload = items[2].buffer
        {
            onMessage(RedisMessage(channel: channel, payload: Array(payload.readableBytesView)))
            return
        }
        guard let next = waiting.popFirst() else {
            failAll(.protocolViolation("a reply nobody asked for"))
            context?.close(promise: nil)
            return
        }
        next.timeout?.cancel()
        switch value {
        case .error(let message):
            next.promise.fail(RedisError.server(message))
        case .array(let items) where items.first?.string == "subscribe":
            subscribed = true
            next.promise.succeed(value)
        default:
            next.promise.succeed(value)
        }
    }

    private func timedOut() {
        failAll(.timedOut)
        context?.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        while let next = waiting.popFirst() {
            next.timeout?.cancel()
            next.promise.fail(error)
        }
    }
}
