import NIOCore

/// A RESP2 reply.
public enum RedisValue: Sendable, Equatable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    /// A slice of the bytes received (``RESPReader``).
    case bulkString(ByteBuffer)
    /// The null bulk string or null array.
    case null
    case array([RedisValue])

    /// The bytes of a bulk or simple string.
    public var buffer: ByteBuffer? {
        switch self {
        case .bulkString(let bytes): bytes
        case .simpleString(let text): ByteBuffer(string: text)
        default: nil
        }
    }

    /// A bulk or simple string as text (invalid UTF-8 repaired).
    public var string: String? {
        switch self {
        case .bulkString(let bytes): String(buffer: bytes)
        case .simpleString(let text): text
        default: nil
        }
    }
}

/// Why a command got no reply.
public enum RedisError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The server answered with an error reply.
    case server(String)
    /// There is no connection (yet, or any more).
    case notConnected
    case connectionClosed
    /// The connection failed under the replies, e.g. a TLS handshake that refused the server's certificate.
    case connectionFailed(String)
    case timedOut
    /// The server sent bytes that are not RESP, or a reply nobody asked for.
    case protocolViolation(String)

    public var description: String {
        switch self {
        case .server(let message): "Redis replied: \(message)"
        case .notConnected: "not connected to Redis"
        case .connectionClosed: "the Redis connection closed before the reply"
        case .connectionFailed(let reason): "the Redis connection failed: \(reason)"
        case .timedOut: "Redis did not reply in time"
        case .protocolViolation(let message): "not a Redis reply: \(message)"
        }
    }
}
