import CSocketQueues
import Foundation
import ReplicationNIO
import ReplicationTestSupport
import Testing

/// The ioctl shim on a real TCP connection over loopback.
@Suite struct SocketQueuesTests {
    /// A connected pair: `client` (with a small receive buffer) and the accepted server side.
    func connectedPair() throws -> (client: LineSocket, accepted: Int32, listener: Int32) {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length)
                listen(listener, 1)
                return getsockname(listener, $0, &length)
            }
        }
        let client = try LineSocket(port: Int(UInt16(bigEndian: address.sin_port)), receiveBuffer: 4096)
        let accepted = accept(listener, nil, nil)
        return (client, accepted, listener)
    }

    @Test func unreadAndUnsentBytesAreReportedAndFallBackToZero() throws {
        let (client, accepted, listener) = try connectedPair()
        defer {
            close(accepted)
            close(listener)
        }
        // The server side writes far more than the client's small window holds, without blocking.
        let payload = [UInt8](repeating: 0x61, count: 1 << 20)
        var written = 0
        while written < payload.count {
            let n = payload[written...].withUnsafeBytes { send(accepted, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n <= 0 { break }
            written += n
        }
        #expect(written > 0)
        let serverSide = try SocketQueues.read(descriptor: accepted)
        let clientSide = try SocketQueues.read(descriptor: client.fd)
        #expect(serverSide.unsent > 0)  // the peer has not taken it all
        #expect(clientSide.unread > 0)  // arrived, not read
        #expect(serverSide.unsent <= written && clientSide.unread <= written)

        _ = try client.readBytes(written)
        try waitUntilTrue { (try? SocketQueues.read(descriptor: accepted).unsent) == 0 }
        #expect(try SocketQueues.read(descriptor: client.fd).unread == 0)
    }

    @Test func aListeningOrClosedDescriptorIsAnError() throws {
        let (_, accepted, listener) = try connectedPair()
        close(accepted)
        #expect(throws: SocketQueues.Failure(errno: EINVAL)) { try SocketQueues.read(descriptor: listener) }
        close(listener)
        #expect(throws: SocketQueues.Failure(errno: EBADF)) { try SocketQueues.read(descriptor: listener) }
    }
}
