import NIOCore
import ReplicationCore
import StreamLog

/// A writer's rows on their way to the log. ``WriterBatches`` decides what is a complete batch and what
/// is refused; the rows' bytes are gathered here, those of every batch completed during one read in one
/// buffer, so that a read of hundreds of rows becomes one append with no String or buffer per row.
struct WriterIngest {
    /// A batch (or a position advance) waiting for the end of the read.
    private struct Completed {
        var stream: StreamName
        var token: Int64
        var range: Range<Int>
        var rowCount: Int
        var command: CommandName
        /// Set when the bytes are the writer's own lines, one row each, every row its own batch with these
        /// tokens: a run (``NewBatch/run(_:lines:tokens:)``), grown while such rows follow each other.
        var runTokens: [Int64]?
    }

    private var rules: WriterBatches
    /// Rows of unfinished (`batch`) batches, per stream, each followed by `\n`.
    private var openRows: [ByteBuffer?]
    /// Bytes of the batches completed since the last ``take()``.
    private var completedRows: ByteBuffer
    private var completed: [Completed] = []
    private let allocator: ByteBufferAllocator
    /// A stream's current token in the log, which the writer's tokens are checked against.
    private let head: (StreamName) -> Int64

    init(configuration: ProtocolConfiguration, allocator: ByteBufferAllocator, head: @escaping (StreamName) -> Int64) {
        self.rules = WriterBatches(configuration: configuration)
        self.head = head
        self.openRows = [ByteBuffer?](repeating: nil, count: StreamName.all.count)
        self.allocator = allocator
        self.completedRows = allocator.buffer(capacity: 0)
    }

    var isEmpty: Bool { completed.isEmpty }

    /// Bytes of the rows of the batches completed since the last ``take()``.
    var completedBytes: Int { completedRows.readableBytes }

    /// What became of one line on the fast path.
    private enum RowLineOutcome {
        /// Not a row in its common form: the general path reads it.
        case notInCommonForm
        case taken
        case rejected(ClosingError)
    }

    /// Why ``takeRows(from:framer:)`` stopped before the end of the buffer.
    enum Interruption {
        /// A line that is not a row in its common form: the general path reads it.
        case generalPath(InboundFrame)
        /// A row that was refused (it counts as taken); the writer is closed with this error.
        case rejected(ClosingError)
    }

    /// Takes a writer's lines from `buffer` while they are rows in their common form (``WriterRowLine``),
    /// in one pass with no per-line call back into the connection and, for lines without a `\r`, no
    /// buffer per line. Returns how many it took and, unless it used up every complete line, why it
    /// stopped.
    mutating func takeRows(from buffer: inout ByteBuffer, framer: inout LineFramer) -> (taken: Int, stop: Interruption?)
    {
        var taken = 0
        while true {
            var rejection: ClosingError?
            framer.takeLines(&buffer) { line in
                switch takeRow(line) {
                case .notInCommonForm: return .left
                case .taken:
                    taken += 1
                    return .taken
                case .rejected(let refused):
                    taken += 1
                    rejection = refused
                    return .takenLast
                }
            }
            if let rejection { return (taken, .rejected(rejection)) }
            // What the pass left: the start of a line, or a line it does not take in place.
            guard let frame = framer.nextFrame(&buffer) else { return (taken, nil) }
            guard case .line(let line) = frame else { return (taken, .generalPath(frame)) }
            switch line.withUnsafeReadableBytes({ takeRow($0) }) {
            case .notInCommonForm: return (taken, .generalPath(frame))
            case .taken: taken += 1
            case .rejected(let rejection): return (taken + 1, .rejected(rejection))
            }
        }
    }

    /// One line (without its newline) if it is a row in its common form.
    private mutating func takeRow(_ line: UnsafeRawBufferPointer) -> RowLineOutcome {
        guard let row = WriterRowLine(line) else { return .notInCommonForm }
        // The line is in catch-up form whenever its token is a number (no other spelling is recognised).
        let prefix = row.token == .batch ? nil : UnsafeRawBufferPointer(rebasing: line[..<row.rowOffset])
        let rejection = self.row(
            row.stream, token: row.token, shape: .array(count: row.stream.fieldCount),
            bytes: UnsafeRawBufferPointer(rebasing: line[row.rowOffset...]), linePrefix: prefix)
        return rejection.map(RowLineOutcome.rejected) ?? .taken
    }

    /// A row; the error that closes the writer, if refused. `linePrefix` is what came before the row on
    /// the writer's line when that is exactly what catch-up writes before it (`RDATA <stream> <token> `),
    /// so that a batch of this row alone keeps the line as it came.
    mutating func row(
        _ stream: StreamName, token: RowToken, shape: JSONScanner.TopLevel, bytes: UnsafeRawBufferPointer,
        linePrefix: UnsafeRawBufferPointer? = nil
    ) -> ClosingError? {
        switch rules.add(stream, token: token, shape: shape, byteCount: bytes.count, head: head) {
        case .failure(let rejection):
            openRows[stream.index] = nil
            return rejection
        case .success(nil):
            // Taken out while written to, so that the buffer is never shared (and copied) in between.
            var held = openRows[stream.index].take() ?? allocator.buffer(capacity: bytes.count + 1)
            held.writeRow(bytes)
            openRows[stream.index] = held
        case .success(let closed?):
            let start = completedRows.writerIndex
            if let linePrefix, closed.rowCount == 1 {
                completedRows.writeLine(prefix: linePrefix, row: bytes)
                extendRun(stream, token: closed.token, from: start)
            } else {
                if var held = openRows[stream.index].take() { completedRows.writeBuffer(&held) }
                completedRows.writeRow(bytes)
                completed.append(
                    Completed(
                        stream: stream, token: closed.token, range: start..<completedRows.writerIndex,
                        rowCount: closed.rowCount, command: .RDATA))
            }
        }
        return nil
    }

    /// The line just written from `start` joins the run before it when that run is of the same stream,
    /// ends right there, and has a lower token (the log checks only a run's first token); otherwise it
    /// starts one.
    private mutating func extendRun(_ stream: StreamName, token: Int64, from start: Int) {
        let end = completedRows.writerIndex
        // Changed in place, never copied out: the run's token array must stay unshared to grow cheaply.
        if let last = completed.indices.last, completed[last].runTokens != nil, completed[last].stream == stream,
            completed[last].range.upperBound == start, completed[last].token < token
        {
            completed[last].runTokens!.append(token)
            completed[last].token = token
            completed[last].range = completed[last].range.lowerBound..<end
            completed[last].rowCount += 1
        } else {
            completed.append(
                Completed(
                    stream: stream, token: token, range: start..<end, rowCount: 1, command: .RDATA, runTokens: [token]))
        }
    }

    /// A writer's `RDATA` or `POSITION` that took the general path; the error that closes the writer, if
    /// refused. Nothing else is a writer's to store.
    mutating func take(_ command: Command) -> ClosingError? {
        switch command {
        case .rdata(let stream, let token, let row): return self.row(named: stream, token: token, row: row)
        case .position(let stream, let token): return position(named: stream, token: token)
        default: return nil
        }
    }

    /// A row that took the general path: its stream as named on the wire, its JSON already checked.
    private mutating func row(named name: String, token: RowToken, row: RowJSON) -> ClosingError? {
        guard let stream = StreamName(name) else {
            // The rules word the refusal of a stream they do not know.
            if case .failure(let rejection) = rules.add(stream: name, token: token, row: row, head: head) {
                return rejection
            }
            return nil
        }
        var text = row.text
        return text.withUTF8 { self.row(stream, token: token, shape: row.shape, bytes: UnsafeRawBufferPointer($0)) }
    }

    /// A writer's `POSITION`; the error that closes the writer, if refused.
    private mutating func position(named name: String, token: Int64) -> ClosingError? {
        switch rules.position(stream: name, token: token, head: head) {
        case .failure(let rejection):
            return rejection
        case .success(let stream):
            let at = completedRows.writerIndex
            completed.append(Completed(stream: stream, token: token, range: at..<at, rowCount: 0, command: .POSITION))
            return nil
        }
    }

    /// A batch handed to the log, with the command that completed it.
    typealias Submitted = (batch: NewBatch, command: CommandName)

    /// The batches completed since the last call, in order, with the command that completed each.
    mutating func take() -> [Submitted] {
        let bytes = completedRows
        let batches = completed.map { entry -> Submitted in
            let slice = bytes.getSlice(at: entry.range.lowerBound, length: entry.range.count)!
            if let tokens = entry.runTokens { return (.run(entry.stream, lines: slice, tokens: tokens), entry.command) }
            let rows = RowTexts(bytes: slice, count: entry.rowCount)
            return (NewBatch(stream: entry.stream, rows: rows, token: .exactly(entry.token)), entry.command)
        }
        completed.removeAll(keepingCapacity: true)
        // The slices share the old buffer, which an in-memory log keeps whole as long as any of them: the
        // next read's rows go to a new one sized by what this read used, not by the largest read so far.
        completedRows = allocator.buffer(capacity: max(bytes.writerIndex, 1024))
        return batches
    }
}

extension WriterIngest {
    /// A submitted batch the log refused because its first token is not after the stream's head, with the
    /// batches submitted after it (the log stored none of them).
    struct Resent {
        var batch: ResentBatch
        var command: CommandName
        var following: [Submitted]

        /// What to append once the batch is found stored as re-sent: a run's rows after the head, then the
        /// batches that followed.
        var rest: [Submitted] { (batch.remainder.map { [($0, command)] } ?? []) + following }

        /// The refusal that closes the writer when the batch is not what the log stores; `nil` when it is.
        func refusal(_ compared: Result<ResentBatch.Verdict, any Error>) -> ClosingError? {
            let (stream, head) = (batch.stream, batch.head)
            switch compared {
            case .success(.identical):
                return nil
            case .success(.differs(let token, let why)):
                return .tokenNotAfterCurrent(command, stream: stream, token: token, current: head, difference: why)
            case .failure(StreamLogError.fallenBehind(let oldest)):
                return .tokenNotAfterCurrent(
                    command, stream: stream, token: batch.firstToken, current: head,
                    difference: "the log keeps only the rows after token \(oldest) to compare with")
            case .failure(let error):
                return .notStored(command, stream: stream, token: batch.firstToken, StreamLogError.reason(error))
            }
        }
    }

    /// What the log made of submitted batches: the acknowledgement of each stored one (a run's rows are
    /// acknowledged one by one, as the writer sent them), and either the refusal that closes the writer or
    /// a batch to compare with what the log stores, if the log refused one.
    static func acknowledgements(
        of outcome: Result<AppendResults, any Error>, _ submitted: [Submitted]
    ) -> (positions: [StreamPosition], refusal: ClosingError?, resent: Resent?) {
        let results = (try? outcome.get()) ?? [.failure(.storage("\(outcome)"))]
        var positions: [StreamPosition] = []
        for (index, (result, (batch, command))) in zip(results, submitted).enumerated() {
            switch result {
            case .success(let appended) where batch.rowTokens.isEmpty:
                positions.append(StreamPosition(appended.stream, appended.token))
            case .success(let appended):
                for token in batch.rowTokens { positions.append(StreamPosition(appended.stream, token)) }
            case .failure(let error):
                // The log stores nothing after a refusal: it is the last result.
                if case .tokenNotAfterCurrent(let current) = error, let resent = ResentBatch(batch, head: current) {
                    let following = Array(submitted[(index + 1)...])
                    return (positions, nil, Resent(batch: resent, command: command, following: following))
                }
                // Rows the server makes itself take the next token: only a failure to store refuses them.
                guard case .exactly(let token) = batch.firstToken else { return (positions, nil, nil) }
                let why = StreamLogError.reason(error)
                return (positions, .notStored(command, stream: batch.stream, token: token, why), nil)
            }
        }
        return (positions, nil, nil)
    }
}

extension ByteBuffer {
    /// `POSITION <stream> <token>` lines: a writer gets one per batch (one per row of a run), so they are
    /// written in one pass into space reserved once, the prefix copied and the digits written in place.
    mutating func writePositions(_ positions: [StreamPosition]) {
        let prefixes = positionPrefixes
        let total = positions.reduce(0) { $0 + prefixes[$1.stream.index].count + decimalWidth($1.token) + 1 }
        writeWithUnsafeMutableBytes(minimumWritableBytes: total) { out in
            var at = 0
            for position in positions {
                at += prefixes[position.stream.index].withUnsafeBytes { prefix in
                    UnsafeMutableRawBufferPointer(rebasing: out[at...]).copyMemory(from: prefix)
                    return prefix.count
                }
                at += writeDigits(of: position.token, into: UnsafeMutableRawBufferPointer(rebasing: out[at...]))
                out[at] = UInt8(ascii: "\n")
                at += 1
            }
            return at
        }
    }

    /// A row's bytes and the newline that ends it in ``RowTexts``.
    fileprivate mutating func writeRow(_ bytes: UnsafeRawBufferPointer) {
        writeBytes(bytes)
        writeInteger(UInt8(ascii: "\n"))
    }

    /// A writer's line as it came, `prefix` then `row`, and its newline: one write when the two are
    /// adjacent, as they are in the writer's read buffer.
    fileprivate mutating func writeLine(prefix: UnsafeRawBufferPointer, row: UnsafeRawBufferPointer) {
        if let start = prefix.baseAddress, start + prefix.count == row.baseAddress {
            writeRow(UnsafeRawBufferPointer(start: start, count: prefix.count + row.count))
        } else {
            writeBytes(prefix)
            writeRow(row)
        }
    }
}

/// `POSITION <stream> ` for every stream, by index.
private let positionPrefixes = StreamName.all.map { Array("POSITION \($0.rawValue) ".utf8) }
