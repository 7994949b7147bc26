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

    /// `bytes` holds `count` rows, each followed by `\n`.
    public init(bytes: ByteBuffer, count: Int) {
        self.bytes = bytes
        self.count = count
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
        try Self.forEachLine(of: bytes, skippingWords: 0, body)
    }

    /// Calls `body` with each line of `bytes` after its first `skippingWords` space-separated words
    /// (the row of an `RDATA` line after 3), without its newline.
    static func forEachLine<Failure: Error>(
        of bytes: ByteBuffer, skippingWords: Int, _ body: (UnsafeRawBufferPointer) throws(Failure) -> Void
    ) throws(Failure) {
        var failure: Failure?
        bytes.withUnsafeReadableBytes { all in
            var start = 0
            while start < all.count {
                for _ in 0..<skippingWords { start = all[start...].firstIndex(of: UInt8(ascii: " "))! + 1 }
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

/// A batch to append: one of three things, each stored and acknowledged as a whole.
public enum NewBatch: Sendable {
    /// Rows under one token: a writer's batch, or rows the server makes itself (``AppendToken/next``).
    case rows(StreamName, RowTexts, token: AppendToken)
    /// Consecutive one-row batches of a writer, each row with its own token (strictly increasing), given
    /// as the writer's lines `RDATA <stream> <token> <row>\n`: exactly what catch-up and live fan-out
    /// send, so the log keeps these bytes instead of building them. Stored and handed to subscribers as
    /// one; accepted if the first token is after the stream's current one.
    case run(StreamName, lines: ByteBuffer, tokens: [Int64])
    /// The stream moves to `token` without a row (a writer's `POSITION`). With `forgettingEarlier`,
    /// what came before is unknown to this log and readers behind it have fallen behind, as if it had
    /// been pruned (a relay that joined its upstream at `NOW`).
    case advance(StreamName, to: Int64, forgettingEarlier: Bool)

    /// Rows under one token; none and a writer's token is a position advance.
    public init(stream: StreamName, rows: RowTexts, token: AppendToken) {
        if rows.isEmpty, case .exactly(let to) = token {
            self = .advance(stream, to: to, forgettingEarlier: false)
        } else {
            self = .rows(stream, rows, token: token)
        }
    }

    public init(stream: StreamName, rows: [String], token: AppendToken) {
        self.init(stream: stream, rows: RowTexts(rows), token: token)
    }

    /// The stream starts at `token` in this log, with nothing known before it.
    public static func startingAt(_ stream: StreamName, token: Int64) -> NewBatch {
        .advance(stream, to: token, forgettingEarlier: true)
    }

    public var stream: StreamName {
        switch self {
        case .rows(let stream, _, _), .run(let stream, _, _), .advance(let stream, _, _): stream
        }
    }

    public var rowCount: Int {
        switch self {
        case .rows(_, let rows, _): rows.count
        case .run(_, _, let tokens): tokens.count
        case .advance: 0
        }
    }

    /// A run's tokens, one per row; empty otherwise.
    public var rowTokens: [Int64] {
        if case .run(_, _, let tokens) = self { tokens } else { [] }
    }

    /// The token the log compares with the stream's current one: a run's first.
    public var firstToken: AppendToken {
        switch self {
        case .rows(_, _, let token): token
        case .run(_, _, let tokens): .exactly(tokens[0])
        case .advance(_, let to, _): .exactly(to)
        }
    }

    /// A run without its rows of tokens up to `token`; `nil` when nothing is left, or for any other batch
    /// (its rows share one token).
    public func droppingRows(through token: Int64) -> NewBatch? {
        guard case .run(let stream, let lines, let tokens) = self else { return nil }
        let dropped = tokens.prefix { $0 <= token }.count
        guard dropped < tokens.count else { return nil }
        return .run(stream, lines: lines.droppingLines(dropped), tokens: Array(tokens[dropped...]))
    }

    /// Whether readers behind this batch have fallen behind.
    public var forgetsEarlier: Bool {
        if case .advance(_, _, true) = self { true } else { false }
    }

    /// The stream's token once this batch is stored after `current`, or the refusal of a writer's token
    /// that is not after it. Both logs decide with this.
    public func tokenAfterAppend(to current: Int64) -> Result<Int64, StreamLogError> {
        let last: Int64
        switch self {
        case .rows(_, _, .next): return .success(current + 1)
        case .rows(_, _, .exactly(let token)), .advance(_, let token, _): last = token
        case .run(_, _, let tokens): last = tokens[tokens.count - 1]
        }
        guard case .exactly(let first) = firstToken, first > current else {
            return .failure(.tokenNotAfterCurrent(current: current))
        }
        return .success(last)
    }

    /// The rows as live fan-out sends them once stored at `token`: `batch` on every row of a batch but
    /// the last, which carries `token`; a run's lines as they are.
    public func liveLines(token: Int64) -> ByteBuffer {
        switch self {
        case .rows(let stream, let rows, _): RowLines.live(rows, stream: stream, token: token)
        case .run(_, let lines, _): lines
        case .advance: ByteBuffer()
        }
    }

    /// Calls `body` with each row as the log keeps it, once stored at `token`: its own token, its place
    /// among the rows of that token, and its bytes.
    public func forEachRow<Failure: Error>(
        storedAt token: Int64, _ body: (_ token: Int64, _ seq: Int, UnsafeRawBufferPointer) throws(Failure) -> Void
    ) throws(Failure) {
        var index = 0
        switch self {
        case .rows(_, let rows, _):
            try rows.forEachRow { row throws(Failure) in
                try body(token, index, row)
                index += 1
            }
        case .run(_, let lines, let tokens):
            try RowTexts.forEachLine(of: lines, skippingWords: 3) { row throws(Failure) in
                try body(tokens[index], 0, row)
                index += 1
            }
        case .advance:
            break
        }
    }
}

extension ByteBuffer {
    /// The bytes after the first `count` lines (each ending with `\n`), sharing the storage.
    func droppingLines(_ count: Int) -> ByteBuffer {
        var rest = self
        for _ in 0..<count {
            let newline = rest.readableBytesView.firstIndex(of: UInt8(ascii: "\n"))!
            rest.moveReaderIndex(to: newline + 1)
        }
        return rest
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

    /// As ``append(_:on:)``, and `stored` gets the results as soon as the accepted batches are stored, on
    /// the thread that stored them, before the future completes: the fan-out of a group commit leaves from
    /// the commit itself instead of waiting for `eventLoop`, which a busy writer keeps reading. When
    /// nothing is stored, `stored` may not be called at all.
    func append(
        _ batches: [NewBatch], on eventLoop: any EventLoop,
        whenStored stored: @escaping @Sendable (AppendResults) -> Void
    ) -> EventLoopFuture<AppendResults>

    /// Reads the rows after `token`, at most about `maxBytes` of lines (always at least one batch), away
    /// from the event loop when that takes I/O; the future completes on `eventLoop`, failing with a
    /// ``StreamLogError``.
    func read(_ stream: StreamName, after token: Int64, maxBytes: Int, on eventLoop: any EventLoop)
        -> EventLoopFuture<LogPage>

    /// Refuses further appends and returns once everything appended before is stored.
    func close() async
}

extension StreamLog {
    /// A log that stores on the caller's thread has nothing to save: `stored` runs as the future completes.
    public func append(
        _ batches: [NewBatch], on eventLoop: any EventLoop,
        whenStored stored: @escaping @Sendable (AppendResults) -> Void
    ) -> EventLoopFuture<AppendResults> {
        append(batches, on: eventLoop).map { results in
            stored(results)
            return results
        }
    }
}

extension StreamLogError {
    /// What a read came back with, as the server session takes it.
    public static func pageRead(_ result: Result<LogPage, any Error>) -> PageRead<ByteBuffer> {
        switch result {
        case .success(let page): .page(page)
        case .failure(StreamLogError.fallenBehind(let oldestServable)): .fallenBehind(oldestServable: oldestServable)
        case .failure(let error): .failed(reason(error))
        }
    }

    /// Why the log failed, in words for a peer: a storage error's own, any other error described.
    public static func reason(_ error: any Error) -> String {
        if case StreamLogError.storage(let why) = error { why } else { "\(error)" }
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
    static func write(
        _ row: UnsafeRawBufferPointer, stream: StreamName, tokenText: String, into buffer: inout ByteBuffer
    ) {
        buffer.writeStaticString("RDATA ")
        buffer.writeString(stream.rawValue)
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeString(tokenText)
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeBytes(row)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }
}
