import CSocketQueues

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
        var unread: Int32 = 0
        var unsent: Int32 = 0
        let inResult = rs_socket_unread_bytes(descriptor, &unread)
        guard inResult == 0 else { throw Failure(errno: inResult) }
        let outResult = rs_socket_unsent_bytes(descriptor, &unsent)
        guard outResult == 0 else { throw Failure(errno: outResult) }
        return SocketQueues(unread: Int(unread), unsent: Int(unsent))
    }
}
