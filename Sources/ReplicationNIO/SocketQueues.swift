import CSocketQueues
import NIOCore

/// The kernel's queues of one TCP socket, read with `ioctl(SIOCINQ/SIOCOUTQ)`.
///
/// Only read a descriptor that is lent to you on its event loop (NIO's `withUnsafeTransportIfAvailable`):
/// a cached descriptor may already be closed and reused by another connection.
public struct SocketQueues: Sendable, Equatable {
    /// Bytes received and not yet read by us (`SIOCINQ`).
    public var unread: Int
    /// Bytes we wrote that the peer has not acknowledged yet (`SIOCOUTQ`).
    public var unsent: Int

    public struct Failure: Error, Equatable, CustomStringConvertible {
        public var errno: Int32
        public init(errno: Int32) { self.errno = errno }
        public var description: String { "ioctl on the socket failed (errno \(errno))" }
    }

    public static func read(descriptor: Int32) throws(Failure) -> SocketQueues {
        SocketQueues(unread: try unread(descriptor: descriptor), unsent: try unsent(descriptor: descriptor))
    }

    /// `SIOCINQ` alone.
    public static func unread(descriptor: Int32) throws(Failure) -> Int {
        var bytes: Int32 = 0
        let result = rs_socket_unread_bytes(descriptor, &bytes)
        guard result == 0 else { throw Failure(errno: result) }
        return Int(bytes)
    }

    /// `SIOCOUTQ` alone.
    public static func unsent(descriptor: Int32) throws(Failure) -> Int {
        var bytes: Int32 = 0
        let result = rs_socket_unsent_bytes(descriptor, &bytes)
        guard result == 0 else { throw Failure(errno: result) }
        return Int(bytes)
    }
}

/// What a connection's snapshot reports of its send and receive queues, asked cheaply.
struct SendQueueProbe {
    /// The socket, borrowed once when the channel became active and used only on this event loop while
    /// the channel is active. NIO closes the descriptor and fires `channelInactive` in one step on this
    /// loop, so no snapshot can run in between; borrowing it again per scrape costs ~5 µs of runtime
    /// casts per connection.
    private var descriptor: NIOBSDSocket.Handle?
    /// False once a sample saw nothing queued, in NIO or in the kernel: only a write of ours can queue
    /// bytes again, so until then an idle connection's send queues are known to be empty without asking.
    private var mayHoldBytes = true

    mutating func borrowDescriptor(of context: ChannelHandlerContext) {
        descriptor = try? context.pipeline.syncOperations.withUnsafeTransportIfAvailable(of: NIOBSDSocket.Handle.self) {
            $0
        }
    }

    /// A write was queued.
    mutating func wrote() { mayHoldBytes = true }

    /// Bytes unread in the kernel, unsent in the kernel, and buffered in NIO; zero once the channel is gone.
    mutating func sample(_ channel: (any Channel)?) -> (unread: Int, unsent: Int, buffered: Int) {
        guard let descriptor else { return (0, 0, 0) }
        let unread = (try? SocketQueues.unread(descriptor: descriptor)) ?? 0
        guard mayHoldBytes else { return (unread, 0, 0) }
        let unsent = (try? SocketQueues.unsent(descriptor: descriptor)) ?? 0
        let buffered = (try? channel?.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        mayHoldBytes = unsent > 0 || buffered > 0
        return (unread, unsent, buffered)
    }
}
