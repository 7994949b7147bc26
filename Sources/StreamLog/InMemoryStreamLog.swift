import DequeModule
import NIOConcurrencyHelpers
import NIOCore
import ReplicationCore

/// A stream log held in memory, with a per-stream row budget. Used for tests and when no data
/// directory is wanted; everything is lost on restart.
public final class InMemoryStreamLog: StreamLog {
    private struct StoredBatch {
        /// The batch's token; a run's last.
        var token: Int64
        var rowCount: Int
        /// The rows with their numeric tokens, as catch-up sends them.
        var catchUpLines: ByteBuffer
        /// A run's tokens, one per line; empty for a batch (every line has `token`).
        var rowTokens: [Int64]

        /// The lines after `after`: all of them, or for a run that `after` falls inside, those of the
        /// rows whose token is greater (rare: a reader asked for a token in the middle of a run).
        func lines(after: Int64) -> (lines: ByteBuffer, rowCount: Int) {
            guard let first = rowTokens.first, after >= first else { return (catchUpLines, rowCount) }
            let skipped = rowTokens.firstIndex { $0 > after } ?? rowTokens.count
            return (catchUpLines.droppingLines(skipped), rowCount - skipped)
        }

        /// Retention: a run's oldest `count` rows (fewer than all) go; returns the last token dropped.
        mutating func dropFirstRowsOfRun(_ count: Int) -> Int64 {
            let last = rowTokens[count - 1]
            catchUpLines = catchUpLines.droppingLines(count)
            rowTokens.removeFirst(count)
            rowCount -= count
            return last
        }
    }

    private struct Stream {
        var batches = Deque<StoredBatch>()
        var currentToken: Int64 = 0
        /// Rows after this token are all retained; a reader behind it has fallen behind.
        var oldestServable: Int64 = 0
        var rowCount = 0
    }

    private let streams: [NIOLockedValueBox<Stream>]
    private let retainRows: Int

    /// - Parameter retainRows: rows kept per stream at least; older whole batches are dropped beyond it.
    public init(retainRows: Int = 100_000) {
        precondition(retainRows > 0, "retainRows must be positive")
        self.retainRows = retainRows
        self.streams = StreamName.all.map { _ in NIOLockedValueBox(Stream()) }
    }

    public func currentToken(of stream: StreamName) -> Int64 {
        streams[stream.index].withLockedValue { $0.currentToken }
    }

    public func append(_ batches: [NewBatch], on eventLoop: any EventLoop) -> EventLoopFuture<AppendResults> {
        // A writer's tokens are known before the locks: the catch-up lines of all its batches that do not
        // bring them are built into one buffer, each batch keeping a slice (no allocation per batch). Taken
        // only once the buffer is complete, so that no write into it has to copy what a slice shares.
        var lines = ByteBufferAllocator().buffer(capacity: 0)
        var ranges: [Range<Int>?] = []
        ranges.reserveCapacity(batches.count)
        for batch in batches {
            guard case .rows(let stream, let rows, .exactly(let token)) = batch else {
                ranges.append(nil)
                continue
            }
            let start = lines.writerIndex
            RowLines.catchUp(rows, stream: stream, token: token, into: &lines)
            ranges.append(start..<lines.writerIndex)
        }
        var results: AppendResults = []
        results.reserveCapacity(batches.count)
        for (batch, range) in zip(batches, ranges) {
            let prebuilt = range.map { lines.getSlice(at: $0.lowerBound, length: $0.count)! }
            results.append(append(batch, catchUpLines: prebuilt))
            if case .failure = results.last! { break }
        }
        return eventLoop.makeSucceededFuture(results)
    }

    private func append(_ batch: NewBatch, catchUpLines prebuilt: ByteBuffer?) -> Result<AppendedBatch, StreamLogError> {
        let (rowCount, stream) = (batch.rowCount, batch.stream)
        let retainRows = self.retainRows
        return streams[stream.index].withLockedValue { state -> Result<AppendedBatch, StreamLogError> in
            let previous = state.currentToken
            let newToken: Int64
            switch batch.tokenAfterAppend(to: previous) {
            case .success(let token): newToken = token
            case .failure(let refusal): return .failure(refusal)
            }
            state.currentToken = newToken
            if batch.forgetsEarlier {
                state.batches.removeAll()
                state.rowCount = 0
                state.oldestServable = newToken
            }
            let catchUpLines: ByteBuffer
            switch batch {
            case .advance:
                catchUpLines = ByteBuffer()
            case .run(_, let lines, _):
                catchUpLines = lines
            case .rows(_, let rows, _):
                if let prebuilt {
                    catchUpLines = prebuilt
                } else {
                    var built = ByteBufferAllocator().buffer(capacity: rows.bytes.readableBytes + rows.count * 40)
                    RowLines.catchUp(rows, stream: stream, token: newToken, into: &built)
                    catchUpLines = built
                }
            }
            if rowCount > 0 {
                state.batches.append(
                    StoredBatch(
                        token: newToken, rowCount: rowCount, catchUpLines: catchUpLines, rowTokens: batch.rowTokens))
                state.rowCount += rowCount
                while let oldest = state.batches.first, state.rowCount - oldest.rowCount >= retainRows {
                    state.batches.removeFirst()
                    state.rowCount -= oldest.rowCount
                    state.oldestServable = oldest.token
                }
                // A run is many batches: its oldest rows go one by one, down to the budget.
                let excess = state.rowCount - retainRows
                if excess > 0, !state.batches[0].rowTokens.isEmpty {
                    state.oldestServable = state.batches[0].dropFirstRowsOfRun(excess)
                    state.rowCount -= excess
                }
            }
            // A one-row batch and a run are sent live exactly as catch-up sends them; share the bytes.
            let live = rowCount <= 1 ? catchUpLines : batch.liveLines(token: newToken)
            return .success(
                AppendedBatch(
                    stream: stream, previousToken: previous, token: newToken, rowCount: rowCount, liveLines: live))
        }
    }

    /// Nothing to store: appends complete at once.
    public func close() async {}

    /// Memory only: read on the caller's loop.
    public func read(_ stream: StreamName, after token: Int64, maxBytes: Int, on eventLoop: any EventLoop)
        -> EventLoopFuture<LogPage>
    {
        eventLoop.makeCompletedFuture { () throws(StreamLogError) in try read(stream, after: token, maxBytes: maxBytes) }
    }

    package func read(_ stream: StreamName, after token: Int64, maxBytes: Int) throws(StreamLogError) -> LogPage {
        let result = streams[stream.index].withLockedValue { state -> Result<LogPage, StreamLogError> in
            guard token >= state.oldestServable else { return .failure(.fallenBehind(oldestServable: state.oldestServable)) }
            var index = firstBatch(after: token, in: state.batches)
            var lines = ByteBuffer()
            var rows = 0
            var endToken = token
            while index < state.batches.endIndex, lines.readableBytes < maxBytes {
                let batch = state.batches[index]
                var (batchLines, batchRows) = batch.lines(after: token)
                if lines.readableBytes == 0 {
                    lines = batchLines  // the common single-batch page shares the stored bytes
                } else {
                    lines.writeBuffer(&batchLines)
                }
                rows += batchRows
                endToken = batch.token
                index += 1
            }
            let reachedHead = index == state.batches.endIndex
            return .success(
                LogPage(
                    lines: lines, rowCount: rows, endToken: reachedHead ? state.currentToken : endToken,
                    reachedHead: reachedHead))
        }
        return try result.get()
    }

    /// Index of the first batch whose token is greater than `token` (batches are in token order).
    private func firstBatch(after token: Int64, in batches: Deque<StoredBatch>) -> Int {
        var low = batches.startIndex
        var high = batches.endIndex
        while low < high {
            let middle = (low + high) / 2
            if batches[middle].token <= token { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
