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
