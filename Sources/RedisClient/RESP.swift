import CHiredis

/// Parses RESP2 replies out of received bytes with hiredis's reader, which keeps partial replies between
/// reads. Not thread-safe: one per connection, used on its event loop.
package final class RESPReader {
    private let reader: UnsafeMutablePointer<redisReader>

    package init() {
        guard let reader = redisReaderCreate() else { fatalError("hiredis could not allocate a reader") }
        self.reader = reader
    }

    deinit { redisReaderFree(reader) }

    package func feed(_ bytes: UnsafeRawBufferPointer) throws(RedisError) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        guard redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count) == REDIS_OK else {
            throw .protocolViolation(errorText)
        }
    }

    /// The next whole reply, or nil until more bytes arrive.
    package func next() throws(RedisError) -> RedisValue? {
        var reply: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &reply) == REDIS_OK else { throw .protocolViolation(errorText) }
        guard let reply else { return nil }
        defer { freeReplyObject(reply) }
        return Self.value(reply.assumingMemoryBound(to: redisReply.self))
    }

    private var errorText: String {
        withUnsafeBytes(of: reader.pointee.errstr) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    private static func value(_ pointer: UnsafeMutablePointer<redisReply>) -> RedisValue {
        let reply = pointer.pointee
        func bytes() -> [UInt8] { Array(UnsafeRawBufferPointer(start: reply.str, count: reply.len)) }
        switch reply.type {
        case REDIS_REPLY_STRING: return .bulkString(bytes())
        case REDIS_REPLY_STATUS: return .simpleString(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_ERROR: return .error(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_INTEGER: return .integer(Int64(reply.integer))
        case REDIS_REPLY_ARRAY: return .array((0..<reply.elements).map { value(reply.element[$0]!) })
        default: return .null
        }
    }
}

/// A command as RESP2 puts it on the wire (an array of bulk strings), formatted by hiredis.
public enum RESPCommand {
    public static func encode(_ arguments: [[UInt8]]) -> [UInt8] {
        // All arguments in one buffer (never empty, so it has an address), argv pointing into it.
        var joined: [UInt8] = []
        joined.reserveCapacity(arguments.reduce(1) { $0 + $1.count })
        var offsets: [Int] = []
        for argument in arguments {
            offsets.append(joined.count)
            joined += argument
        }
        joined.append(0)
        let lengths = arguments.map(\.count)
        return joined.withUnsafeBufferPointer { buffer in
            let base = UnsafeRawPointer(buffer.baseAddress!)
            var argv: [UnsafePointer<CChar>?] = offsets.map { (base + $0).assumingMemoryBound(to: CChar.self) }
            var target: UnsafeMutablePointer<CChar>?
            let length = redisFormatCommandArgv(&target, Int32(arguments.count), &argv, lengths)
            guard length >= 0, let target else { fatalError("hiredis could not allocate a command") }
            defer { redisFreeCommand(target) }
            return Array(UnsafeRawBufferPointer(start: target, count: Int(length)))
        }
    }

    public static func encode(_ arguments: [String]) -> [UInt8] { encode(arguments.map { Array($0.utf8) }) }
}
