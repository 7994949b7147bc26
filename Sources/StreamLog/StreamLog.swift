import NIOCore
import ReplicationCore

/// Where the token of an appended batch comes from.
public enum AppendToken: Sendable, Equatable {
    /// A writer's token: it must be strictly greater than the stream's current token.
    case exactly(Int64)
    /// The stream's next token (rows the server makes itself, e.g. for `INVALIDATE_CACHE`).
    case next
}

/// Rows' JSON texts, each followed by `\n`, in one buffer: how rows travel to the log without a String
/// each. A row never holds a newline (lines end there).
public struct RowTexts: Sendable {
    public private(set) var bytes: ByteBuffer
    public private(set) var count: Int
    /// Each row is preceded by `RDATA <stream> <token> `: the bytes are a writer's lines.
    private var inLines = false

    /// `bytes` holds `count` rows, each followed by `\n`.
    public init(bytes: ByteBuffer, count: Int) {
        self.bytes = bytes
        self.count = count
    }

    /// `lines` holds `count` lines `RDATA <stream> <token> <row>\n`; the rows are what follows the third space.
    public init(lines: ByteBuffer, count: Int) {
        self.init(bytes: lines, count: count)
        self.inLines = true
    }

    public init(_ rows: [String]) {
        var bytes = ByteBufferAllocator().buffer(capacity: rows.reduce(0) { $0 + $1.utf8.count + 1 })
        for row in rows {
            bytes.writeString(row)
            bytes.writeInteger(UInt8(ascii: "\n"))
        }
        self.init(bytes: bytes, count: rows.count)
    }

    public var isEmpty: Bool { count == 0 }

    /// Calls `body` with each row's bytes, without its newline, in order.
    public func forEachRow<Failure: Error>(_ body: (UnsafeRawBufferPointer) throws(Failure) -> Void) throws(Failure) {
        var failure: Failure?
        bytes.withUnsafeReadableBytes { all in
            var start = 0
            while start < all.count {
                if inLines {
                    for _ in 0..<3 { start = all[start...].firstIndex(of: UInt8(ascii: " "))! + 1 }
                }
                let end = all[start...].firstIndex(of: UInt8(ascii: "\n"))!
                do throws(Failure) {
                    try body(UnsafeRawBufferPointer(rebasing: all[start..<end]))
                } catch {
                    failure = error
                    return
                }
                start = end + 1
            }
        }
        if let failure { throw failure }
    }

}

/// A batch to append: rows (possibly none: a position advance) under one token, or a run of one-row
/// batches (``run(_:lines:tokens:)``).
public struct NewBatch: Sendable {
    public var stream: StreamName
    public var rows: RowTexts
    /// The batch's token; a run's last.
    public var token: AppendToken
    /// A run's tokens, one per row, increasing; empty for a batch.
    public private(set) var rowTokens: [Int64] = []
    /// A run's rows as the writer sent them, `RDATA <stream> <token> <row>\n` each: exactly what catch-up
    /// and live fan-out send, so the log keeps these bytes instead of building them.
    public private(set) var lines: ByteBuffer?
    /// What came before this token is unknown to this log: readers behind it have fallen behind, as if
    /// it had been pruned. Only a position advance carries it (``startingAt(_:token:)``).
    public private(set) var forgetsEarlier = false

    public init(stream: StreamName, rows: RowTexts, token: AppendToken) {
        self.stream = stream
        self.rows = rows
        self.token = token
    }

    public init(stream: StreamName, rows: [String], token: AppendToken) {
        self.init(stream: stream, rows: RowTexts(rows), token: token)
    }

    /// Consecutive one-row batches of a writer, each row with its own token (`tokens`, strictly
    /// increasing), given as the writer's lines. They are stored and handed to subscribers as one; the log
    /// accepts them if the first token is after the stream's current one.
    public static func run(_ stream: StreamName, lines: ByteBuffer, tokens: [Int64]) -> NewBatch {
        var batch = NewBatch(stream: stream, rows: RowTexts(lines: lines, count: tokens.count), token: .exactly(tokens.last!))
        batch.rowTokens = tokens
        batch.lines = lines
        return batch
    }

    /// The token the log compares with the stream's current one: a run's first.
    public var firstToken: AppendToken { rowTokens.first.map(AppendToken.exactly) ?? token }

    /// The stream's token once this batch is stored after `current`, or the refusal of a writer's token
    /// that is not after it. Both logs decide with this.
    public func tokenAfterAppend(to current: Int64) -> Result<Int64, StreamLogError> {
        guard case .exactly(let first) = firstToken, case .exactly(let last) = token else { return .success(current + 1) }
        return first > current ? .success(last) : .failure(.tokenNotAfterCurrent(current: current))
    }

    /// The rows as live fan-out sends them: `batch` on every row of a batch but the last, which carries
    /// `token`; a run's lines as they are.
    public func liveLines(token: Int64) -> ByteBuffer {
        lines ?? RowLines.live(rows, stream: stream, token: token)
    }

    /// The stream starts at `token` in this log, with nothing known before it (a relay that joined its
    /// upstream at `NOW`).
    public static func startingAt(_ stream: StreamName, token: Int64) -> NewBatch {
        var batch = NewBatch(stream: stream, rows: [], token: .exactly(token))
        batch.forgetsEarlier = true
        return batch
    }
}

/// What became of the batches of one append, in the order given; a refusal is the last entry.
public typealias AppendResults = [Result<AppendedBatch, StreamLogError>]

/// A batch the log has accepted: everything fan-out needs, encoded once for every subscriber.
public typealias AppendedBatch = StreamBatch<ByteBuffer>

/// One page of catch-up: rows after a token, each with its own numeric token, bounded in bytes.
public typealias LogPage = CatchUpPage<ByteBuffer>

public enum StreamLogError: Error, Equatable, Sendable {
    /// A writer's token was not greater than the stream's current token.
    case tokenNotAfterCurrent(current: Int64)
    /// The rows after the requested token are no longer retained.
    case fallenBehind(oldestServable: Int64)
    /// The log could not store or read the batch (I/O).
    case storage(String)
}

/// The per-stream, ordered log of `(token, row)` that catch-up reads and fan-out follows.
///
/// Appends are acknowledged through a future so that a durable implementation can group-commit; a
/// batch is visible to readers once its future has succeeded, never before.
public protocol StreamLog: Sendable {
    /// The stream's current token (the token of its last batch or position advance).
    func currentToken(of stream: StreamName) -> Int64

    /// Appends batches in order, up to the first one refused: the results end with that refusal, and the
    /// batches after it are not stored (a writer resends from its last acknowledged token, so nothing
    /// after a gap may be kept). The future completes, on `eventLoop`, once the accepted ones are stored.
    func append(_ batches: [NewBatch], on eventLoop: any EventLoop) -> EventLoopFuture<AppendResults>

    /// Reads the rows after `token`, at most about `maxBytes` of lines (always at least one batch), away
    /// from the event loop when that takes I/O; the future completes on `eventLoop`, failing with a
    /// ``StreamLogError``.
    func read(_ stream: StreamName, after token: Int64, maxBytes: Int, on eventLoop: any EventLoop)
        -> EventLoopFuture<LogPage>

    /// Refuses further appends and returns once everything appended before is stored.
    func close() async
}

extension StreamLogError {
    /// What a read came back with, as the server session takes it.
    public static func pageRead(_ result: Result<LogPage, any Error>) -> PageRead<ByteBuffer> {
        switch result {
        case .success(let page): .page(page)
        case .failure(StreamLogError.fallenBehind(let oldestServable)): .fallenBehind(oldestServable: oldestServable)
        case .failure(StreamLogError.storage(let why)): .failed(why)
        case .failure(let error): .failed("\(error)")
        }
    }
}

extension StreamLog {
    /// Appends one batch; the future fails if the log refuses it.
    public func append(
        _ rows: [String], to stream: StreamName, token: AppendToken, on eventLoop: any EventLoop
    ) -> EventLoopFuture<AppendedBatch> {
        append([NewBatch(stream: stream, rows: rows, token: token)], on: eventLoop).flatMapThrowing { try $0[0].get() }
    }
}

/// The exact bytes of `RDATA` lines, built once per batch.
public enum RowLines {
    /// Every row with the numeric token, as catch-up sends them.
    public static func catchUp(_ rows: RowTexts, stream: StreamName, token: Int64, into buffer: inout ByteBuffer) {
        let tokenText = String(token)
        rows.forEachRow { write($0, stream: stream, tokenText: tokenText, into: &buffer) }
    }

    /// All rows but the last with `batch`, as live fan-out sends a batch.
    public static func live(_ rows: RowTexts, stream: StreamName, token: Int64) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: rows.bytes.readableBytes + rows.count * 32)
        let tokenText = String(token)
        var index = 0
        rows.forEachRow { row in
            index += 1
            write(row, stream: stream, tokenText: index == rows.count ? tokenText : "batch", into: &buffer)
        }
        return buffer
    }

    /// One line: `RDATA <stream> <token> <row>\n`, the row given as its UTF-8 bytes.
    static func write(_ row: UnsafeRawBufferPointer, stream: StreamName, tokenText: String, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("RDATA ")
        buffer.writeString(stream.rawValue)
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeString(tokenText)
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeBytes(row)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }
}
