import CHiredis
import NIOCore

/// Parses RESP2 replies out of received bytes with hiredis's reader, which keeps partial replies between
/// reads. Not thread-safe: one per connection, used on its event loop.
package final class RESPReader {
    /// The most elements an array reply may declare. hiredis allocates an array's element table as soon as
    /// its header arrives, so a 13-byte `*1000000000` from a broken or hostile server would ask for 8 GB;
    /// the replies this client asks for hold thousands at most.
    package static let maxArrayElements = 1 << 20

    private let reader: UnsafeMutablePointer<redisReader>
    /// Set by the array builder when it refused a declared length.
    fileprivate var refusedArrayLength: Int?

    package init() {
        guard let reader = redisReaderCreate() else { fatalError("hiredis could not allocate a reader") }
        self.reader = reader
        reader.pointee.fn = BoundedReplyBuilders.functions
        reader.pointee.privdata = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit { redisReaderFree(reader) }

    package func feed(_ bytes: UnsafeRawBufferPointer) throws(RedisError) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        guard redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count) == REDIS_OK else {
            throw failure
        }
    }

    /// The next whole reply, or nil until more bytes arrive.
    package func next() throws(RedisError) -> RedisValue? {
        var reply: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &reply) == REDIS_OK else { throw failure }
        guard let reply else { return nil }
        defer { freeReplyObject(reply) }
        return Self.value(reply.assumingMemoryBound(to: redisReply.self))
    }

    private var failure: RedisError {
        if let length = refusedArrayLength {
            return .protocolViolation("an array of \(length) elements, more than the \(Self.maxArrayElements) allowed")
        }
        return .protocolViolation(
            withUnsafeBytes(of: reader.pointee.errstr) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) })
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

/// hiredis's own reply builders, but for arrays longer than ``RESPReader/maxArrayElements``: refused (which
/// stops the reader with an error) before anything is allocated. The closure's types follow the installed
/// hiredis (the length is an `int` in 0.14, a `size_t` in 1.x).
private enum BoundedReplyBuilders {
    static let hiredis: redisReplyObjectFunctions = {
        guard let probe = redisReaderCreate() else { fatalError("hiredis could not allocate a reader") }
        defer { redisReaderFree(probe) }
        return probe.pointee.fn.pointee
    }()

    nonisolated(unsafe) static let functions: UnsafeMutablePointer<redisReplyObjectFunctions> = {
        let functions = UnsafeMutablePointer<redisReplyObjectFunctions>.allocate(capacity: 1)
        functions.initialize(to: hiredis)
        functions.pointee.createArray = { task, elements in
            guard Int(elements) <= RESPReader.maxArrayElements else {
                if let owner = task?.pointee.privdata {
                    Unmanaged<RESPReader>.fromOpaque(owner).takeUnretainedValue().refusedArrayLength = Int(elements)
                }
                return nil
            }
            return hiredis.createArray?(task, elements)
        }
        return functions
    }()
}

/// A command as RESP2 puts it on the wire: an array of bulk strings, written straight into the outgoing buffer.
/// hiredis's `redisFormatCommandArgv` (which ``RESPTests`` holds this to) needed the arguments joined into one
/// buffer and its own output copied out again: three copies of every argument, and of a megabyte-sized append
/// script call, each a fresh allocation whose pages were faulted in (BENCHMARKS.md).
public enum RESPCommand {
    public static func write(_ arguments: [[UInt8]], into buffer: inout ByteBuffer) {
        buffer.reserveCapacity(minimumWritableBytes: arguments.reduce(16) { $0 + $1.count + 16 })
        buffer.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            buffer.writeString("$\(argument.count)\r\n")
            buffer.writeBytes(argument)
            buffer.writeStaticString("\r\n")
        }
    }

    public static func encode(_ arguments: [[UInt8]]) -> [UInt8] {
        var buffer = ByteBuffer()
        write(arguments, into: &buffer)
        return Array(buffer.readableBytesView)
    }

    public static func encode(_ arguments: [String]) -> [UInt8] { encode(arguments.map { Array($0.utf8) }) }
}
