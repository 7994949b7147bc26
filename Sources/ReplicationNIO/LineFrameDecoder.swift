import NIOCore
import ReplicationCore

/// A frame of the line protocol: one line without its `\n` (and without a trailing `\r`), or the news
/// that the peer sent a line longer than the limit.
public enum InboundFrame: Equatable, Sendable {
    case line(ByteBuffer)
    case tooLong
}

extension InboundFrame {
    /// The line as text, or the error that closes the connection (too long, or not UTF-8).
    public func text() -> Result<String, ClosingError> {
        switch self {
        case .tooLong:
            return .failure(.lineTooLong)
        case .line(let bytes):
            guard let text = String(validating: bytes.readableBytesView, as: UTF8.self) else {
                return .failure(.line(.invalidUTF8(byteOffset: firstInvalidUTF8Offset(bytes.readableBytesView))))
            }
            return .success(text)
        }
    }
}

/// Offset of the first byte that is not valid UTF-8 (for the error text).
func firstInvalidUTF8Offset(_ bytes: ByteBufferView) -> Int {
    var parser = Unicode.UTF8.ForwardParser()
    var iterator = bytes.makeIterator()
    var offset = 0
    while true {
        switch parser.parseScalar(from: &iterator) {
        case .valid(let scalar): offset += scalar.count
        case .emptyInput, .error: return offset
        }
    }
}

/// One command as the bytes of its line, `\n` included; `nil` if it may not be sent (too long).
func encodedLine(_ command: Command, maxLength: Int, allocator: ByteBufferAllocator) -> ByteBuffer? {
    var buffer = allocator.buffer(capacity: 64)
    return appendLine(command, maxLength: maxLength, to: &buffer) ? buffer : nil
}

/// Appends the command's line and its newline to `buffer`; false (and nothing appended) when it is too long.
func appendLine(_ command: Command, maxLength: Int, to buffer: inout ByteBuffer) -> Bool {
    guard let line = CommandCodec.line(for: command, maxLength: maxLength) else { return false }
    buffer.writeString(line)
    buffer.writeInteger(UInt8(ascii: "\n"))
    return true
}

extension ByteBuffer {
    /// Writes `value` in decimal, as `String(value)` would, without building the String.
    mutating func writeDecimal(_ value: Int64) {
        writeWithUnsafeMutableBytes(minimumWritableBytes: decimalWidth(value)) { writeDigits(of: value, into: $0) }
    }
}

/// Writes `value` in decimal at the start of `out`, as `String(value)` would; returns how many bytes.
func writeDigits(of value: Int64, into out: UnsafeMutableRawBufferPointer) -> Int {
    let count = decimalWidth(value)
    var rest = value.magnitude
    var index = count
    repeat {
        index -= 1
        out[index] = UInt8(ascii: "0") + UInt8(truncatingIfNeeded: rest % 10)
        rest /= 10
    } while rest > 0
    if value < 0 { out[0] = UInt8(ascii: "-") }
    return count
}

/// Splits the byte stream into lines of at most `maxLineLength` bytes (delimiter excluded).
///
/// A longer line, or an unterminated buffer that is already longer, yields `.tooLong` once; everything
/// after it is discarded, since the connection is closing. Like Twisted's `LineOnlyReceiver`, a `\r`
/// counts towards the length; unlike it, a trailing `\r` is then stripped (netcat users).
public struct LineFramer: Sendable {
    private let maxLineLength: Int
    /// Bytes already known to hold no `\n`, so a long line arriving in pieces is scanned once.
    private var scannedBytes = 0
    private var overflowed = false

    public init(maxLineLength: Int) {
        self.maxLineLength = maxLineLength
    }

    /// The next complete frame in `buffer`, consuming it; `nil` if more bytes are needed. The bytes left
    /// in `buffer` must be passed again, with what arrives next appended.
    public mutating func nextFrame(_ buffer: inout ByteBuffer) -> InboundFrame? {
        if overflowed {
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return nil
        }
        let newline = buffer.withUnsafeReadableBytes { bytes -> Int? in
            bytes.count > scannedBytes ? bytes.firstIndex(of: 0x0A, in: scannedBytes..<bytes.count) : nil
        }
        guard let length = newline else {
            scannedBytes = buffer.readableBytes
            return scannedBytes > maxLineLength ? overflow(&buffer) : nil
        }
        scannedBytes = 0
        guard length <= maxLineLength else { return overflow(&buffer) }
        var line = buffer.readSlice(length: length)!
        buffer.moveReaderIndex(forwardBy: 1)
        if line.readableBytesView.last == UInt8(ascii: "\r") {
            line.moveWriterIndex(to: line.writerIndex - 1)
        }
        return .line(line)
    }

    /// What ``takeLines(_:_:)``'s caller did with a line.
    enum LineTaken {
        case taken
        /// Taken, and no line after it may be.
        case takenLast
        /// Left in the buffer, for ``nextFrame(_:)``.
        case left
    }

    /// Hands the complete lines at the start of `buffer` to `take` in place, with no buffer per line,
    /// consuming those it takes, up to the first it leaves. A line ending in `\r`, a line too long and the
    /// start of a line are left to ``nextFrame(_:)``, which frames them as it frames every line.
    mutating func takeLines(_ buffer: inout ByteBuffer, _ take: (UnsafeRawBufferPointer) -> LineTaken) {
        guard !overflowed else { return }
        let consumed = buffer.withUnsafeReadableBytes { bytes -> Int in
            var start = 0
            while let end = bytes.firstIndex(of: 0x0A, in: start..<bytes.count) {
                guard end - start <= maxLineLength, end == start || bytes[end - 1] != UInt8(ascii: "\r") else { break }
                switch take(UnsafeRawBufferPointer(rebasing: bytes[start..<end])) {
                case .taken: start = end + 1
                case .takenLast: return end + 1
                case .left: return start
                }
            }
            return start
        }
        guard consumed > 0 else { return }
        scannedBytes = 0
        buffer.moveReaderIndex(forwardBy: consumed)
    }

    private mutating func overflow(_ buffer: inout ByteBuffer) -> InboundFrame {
        overflowed = true
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .tooLong
    }
}

/// ``LineFramer`` as a pipeline stage, one `InboundFrame` per line (the client's pipeline).
public struct LineFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = InboundFrame

    private var framer: LineFramer

    public init(maxLineLength: Int) {
        self.framer = LineFramer(maxLineLength: maxLineLength)
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = nextFrame(&buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(
        context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool
    ) throws -> DecodingState {
        // A partial last line is dropped at EOF, as Twisted does.
        while let frame = nextFrame(&buffer) {
            context.fireChannelRead(Self.wrapInboundOut(frame))
        }
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }

    mutating func nextFrame(_ buffer: inout ByteBuffer) -> InboundFrame? { framer.nextFrame(&buffer) }
}

/// The start of a line whose end has not arrived yet, kept between reads.
struct UnfinishedLine {
    private var bytes: ByteBuffer?
    /// Whether the buffer last handed out is our own (it began with a kept start of a line).
    private var handedOutOwnBuffer = false

    /// `read` with the kept start of a line before it.
    mutating func prepended(to read: ByteBuffer) -> ByteBuffer {
        handedOutOwnBuffer = bytes != nil
        guard var kept = bytes.take() else { return read }
        var read = read
        kept.writeBuffer(&read)
        return kept
    }

    /// Keeps what is left of the buffer handed out (the start of a line).
    mutating func keep(_ rest: inout ByteBuffer, allocator: ByteBufferAllocator) {
        guard rest.readableBytes > 0 else { return }
        if handedOutOwnBuffer {
            // Already our own buffer: kept, so that a line arriving in many small pieces is copied once.
            rest.discardReadBytes()
            bytes = rest
        } else {
            // Copied out of the read buffer, so that the channel can reuse it.
            var copy = allocator.buffer(capacity: rest.readableBytes)
            copy.writeBuffer(&rest)
            bytes = copy
        }
    }
}
