import NIOCore
import ReplicationCore

/// Parses RESP2 replies out of received bytes, keeping partial replies between reads. A bulk string is a slice
/// of the bytes received, not a copy: hiredis's reader, used before, copied every byte into its own buffer,
/// then into its reply object, which was copied into an array, which a follower copied again into a
/// `ByteBuffer` to store (BENCHMARKS.md). Not thread-safe: one per connection, used on its event loop.
package final class RESPReader {
    /// The most elements an array reply may declare: the replies this client asks for hold thousands at most,
    /// and a 13-byte `*1000000000` from a broken or hostile server is refused before anything is allocated.
    package static let maxArrayElements = 1 << 20
    /// The longest bulk string: Redis's own `proto-max-bulk-len` default.
    package static let maxBulkLength = 512 << 20
    /// Arrays nested deeper are refused, as hiredis's reader refused them: an `XREAD` reply is five deep.
    package static let maxDepth = 8

    /// Received and not yet parsed: the rest of a reply whose end has not come yet.
    private var received = ByteBuffer()
    /// Whether `received` is a buffer of this reader's own that no reply holds a slice of: bytes that come are
    /// written into it where they are.
    private var ownsReceived = false
    /// The arrays whose elements are still arriving, outermost first, with their declared counts.
    private var open: [(count: Int, elements: [RedisValue])] = []
    /// Once the bytes are not RESP, nothing after them can be read either.
    private var failure: RedisError?

    package init() {}

    package func feed(_ bytes: ByteBuffer) throws(RedisError) {
        if let failure { throw failure }
        if received.readableBytes == 0 {
            received = bytes
            ownsReceived = false
        } else if ownsReceived {
            received.writeImmutableBuffer(bytes)
        } else {
            // Writing into a buffer that replies hold slices of would copy it whole, capacity and all: 4 MiB
            // fresh for every read of an `XREAD` reply, its pages faulted in. The rest is copied out instead.
            var joined = ByteBufferAllocator().buffer(capacity: received.readableBytes + bytes.readableBytes)
            joined.writeBuffer(&received)
            joined.writeImmutableBuffer(bytes)
            received = joined
            ownsReceived = true
        }
    }

    /// The next whole reply, or nil until more bytes arrive.
    package func next() throws(RedisError) -> RedisValue? {
        if let failure { throw failure }
        do throws(RedisError) {
            while true {
                var value: RedisValue
                switch try item() {
                case .incomplete: return nil
                case .opened: continue
                case .value(let parsed): value = parsed
                }
                while let last = open.indices.last {
                    open[last].elements.append(value)
                    guard open[last].elements.count == open[last].count else { break }
                    value = .array(open.removeLast().elements)
                }
                if open.isEmpty { return value }
            }
        } catch {
            failure = error
            throw error
        }
    }

    private enum Item {
        case value(RedisValue)
        /// An array's header: its elements come next.
        case opened
        /// Its bytes have not all arrived; none are consumed.
        case incomplete
    }

    /// Parses one value or an array's header, consuming its bytes.
    private func item() throws(RedisError) -> Item {
        // `withUnsafeReadableBytes` cannot throw a typed error: the header's outcome is carried out of it.
        let header: Result<(type: UInt8, line: Range<Int>)?, RedisError> = received.withUnsafeReadableBytes { bytes in
            guard let type = bytes.first else { return .success(nil) }
            guard "+-:$*".utf8.contains(type) else {
                return .failure(
                    .protocolViolation("Protocol error, got \"\(Character(Unicode.Scalar(type)))\" as reply type byte"))
            }
            return .success(bytes.lineEnd().map { (type, 1..<$0) })
        }
        guard let (type, line) = try header.get() else { return .incomplete }
        let text = received.getString(at: received.readerIndex + line.lowerBound, length: line.count)!
        let headerLength = line.upperBound + 2
        switch type {
        case UInt8(ascii: "+"):
            received.moveReaderIndex(forwardBy: headerLength)
            return .value(.simpleString(text))
        case UInt8(ascii: "-"):
            received.moveReaderIndex(forwardBy: headerLength)
            return .value(.error(text))
        case UInt8(ascii: ":"):
            guard let number = Int64(text) else { throw .protocolViolation("Bad integer value '\(text)'") }
            received.moveReaderIndex(forwardBy: headerLength)
            return .value(.integer(number))
        case UInt8(ascii: "$"):
            guard let length = Int(text), (-1...Self.maxBulkLength).contains(length) else {
                throw .protocolViolation("Bulk string length '\(text)' out of range")
            }
            guard length >= 0 else {
                received.moveReaderIndex(forwardBy: headerLength)
                return .value(.null)
            }
            guard received.readableBytes >= headerLength + length + 2 else { return .incomplete }
            guard received.getInteger(at: received.readerIndex + headerLength + length, as: UInt16.self) == 0x0D0A
            else {
                throw .protocolViolation("a bulk string of \(length) bytes does not end with CRLF")
            }
            received.moveReaderIndex(forwardBy: headerLength)
            let bytes = received.readSlice(length: length)!
            ownsReceived = false
            received.moveReaderIndex(forwardBy: 2)
            return .value(.bulkString(bytes))
        default:
            guard let count = Int(text), count >= -1 else {
                throw .protocolViolation("Array length '\(text)' out of range")
            }
            guard count <= Self.maxArrayElements else {
                throw .protocolViolation(
                    "an array of \(count) elements, more than the \(Self.maxArrayElements) allowed")
            }
            guard open.count < Self.maxDepth else {
                throw .protocolViolation("arrays nested more than \(Self.maxDepth) deep")
            }
            received.moveReaderIndex(forwardBy: headerLength)
            switch count {
            case -1: return .value(.null)
            case 0: return .value(.array([]))
            default:
                // Reserved only as far as the bytes received could hold elements (three bytes at least each).
                var elements: [RedisValue] = []
                elements.reserveCapacity(min(count, received.readableBytes / 3 + 1))
                open.append((count, elements))
                return .opened
            }
        }
    }
}

extension UnsafeRawBufferPointer {
    /// The index of the `\r` of the first `\r\n`, if any.
    fileprivate func lineEnd() -> Int? {
        var start = 1
        while let newline = firstIndex(of: UInt8(ascii: "\n"), in: start..<count) {
            if self[newline - 1] == UInt8(ascii: "\r") { return newline - 1 }
            start = newline + 1
        }
        return nil
    }
}

/// A command as RESP2 puts it on the wire: an array of bulk strings, written straight into the outgoing buffer.
/// hiredis's `redisFormatCommandArgv` (which ``RESPTests`` holds this to) needed the arguments joined into one
/// buffer and its own output copied out again: three copies of every argument, and of a megabyte-sized append
/// script call, each a fresh allocation whose pages were faulted in (BENCHMARKS.md). A large argument (a
/// batch's rows) is not copied at all: it goes to the socket as the buffer it is.
public enum RESPCommand {
    /// Writes a command into `buffer`. An argument of at least `separateBytes` is handed to `emit` after the
    /// buffer so far, and writing goes on in a fresh buffer.
    public static func write(
        _ arguments: [ByteBuffer], into buffer: inout ByteBuffer, separating separateBytes: Int = .max,
        emit: (ByteBuffer) -> Void = { _ in }
    ) {
        buffer.reserveCapacity(
            minimumWritableBytes: arguments.reduce(16) {
                $0 + ($1.readableBytes < separateBytes ? $1.readableBytes : 0) + 16
            })
        buffer.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            buffer.writeString("$\(argument.readableBytes)\r\n")
            if argument.readableBytes >= separateBytes {
                emit(buffer)
                emit(argument)
                buffer = ByteBufferAllocator().buffer(capacity: 256)
            } else {
                buffer.writeImmutableBuffer(argument)
            }
            buffer.writeStaticString("\r\n")
        }
    }

    public static func encode(_ arguments: [ByteBuffer]) -> [UInt8] {
        var buffer = ByteBuffer()
        write(arguments, into: &buffer)
        return Array(buffer.readableBytesView)
    }

    public static func encode(_ arguments: [String]) -> [UInt8] { encode(self.arguments(arguments)) }

    /// The arguments of a command made of text.
    public static func arguments(_ strings: [String]) -> [ByteBuffer] { strings.map { ByteBuffer(string: $0) } }
}
