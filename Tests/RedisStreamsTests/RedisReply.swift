import NIOCore
import RedisClient
import ReplicationTestSupport

extension RedisServer {
    /// Sends one command on a connection of its own and returns its reply, parsed as the sidecar's client
    /// parses it.
    func reply(_ arguments: [[UInt8]]) throws -> RedisValue {
        let socket = try LineSocket(port: port)
        defer { socket.close() }
        try socket.send(RESPCommand.encode(arguments))
        let reader = RESPReader()
        while true {
            if let value = try reader.next() { return value }
            try reader.feed(ByteBuffer(bytes: socket.readBytes(1)))
        }
    }

    func reply(_ arguments: [String]) throws -> RedisValue { try reply(arguments.map { Array($0.utf8) }) }
}
