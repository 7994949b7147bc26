import NIOCore
import ReplicationCore

/// A writer's batch refused because its first token is not after the stream's head. A writer that lost
/// its connection after the log stored a batch but before the acknowledgement reached it sends the batch
/// again: when the log holds exactly these rows under these tokens, it is acknowledged again and nothing
/// is stored twice; anything else is the writer's mistake, named by its first difference.
public struct ResentBatch: Sendable {
    public let batch: NewBatch
    /// The batch's first token: the log's rows from there on are compared.
    public let firstToken: Int64
    /// The batch's last token (a run's last row's, or the token of any other batch).
    public let lastToken: Int64
    /// The last of the batch's tokens the log already has: the head it was refused against, or the
    /// batch's last token if that comes first. A run's rows after it are new.
    public let storedThrough: Int64
    /// The stream's token the log refused the batch against.
    public let head: Int64

    /// `head` is the stream's token the log refused the batch against; `nil` for rows the server makes
    /// itself (they take the next token and are never refused).
    public init?(_ batch: NewBatch, head: Int64) {
        guard case .exactly(let first) = batch.firstToken else { return nil }
        self.batch = batch
        self.firstToken = first
        self.lastToken = batch.rowTokens.last ?? first
        self.storedThrough = min(head, lastToken)
        self.head = head
    }

    public var stream: StreamName { batch.stream }

    /// The acknowledgements the original got for the rows the log already has: one per row of a run (as
    /// the writer sent them), one for any other batch.
    public var positions: [StreamPosition] {
        let tokens = batch.rowTokens.isEmpty ? [lastToken] : batch.rowTokens.filter { $0 <= storedThrough }
        return tokens.map { StreamPosition(stream, $0) }
    }

    /// A run's rows after ``storedThrough``: new, still to append.
    public var remainder: NewBatch? { batch.droppingRows(through: storedThrough) }

    /// What the comparison found.
    public enum Verdict: Sendable, Equatable {
        /// The log holds exactly the re-sent rows under their tokens.
        case identical
        /// The first difference: the token it is at, and what differs.
        case differs(token: Int64, String)
    }

    /// Compares the re-sent rows of tokens up to ``storedThrough`` with `stored`, the log's catch-up lines
    /// (`RDATA <stream> <token> <row>\n`) from the batch's first token on; lines after ``storedThrough``
    /// are ignored.
    public func compare(withStored stored: ByteBuffer) -> Verdict {
        var storedRows: [(token: Int64, row: ByteBuffer)] = []
        stored.withUnsafeReadableBytes { lines in
            CatchUpLines.forEach(of: lines) { _, token, row in
                guard let token, token >= firstToken, token <= storedThrough else { return }
                storedRows.append((token, ByteBuffer(bytes: row)))
            }
        }
        var resentRows: [(token: Int64, row: ByteBuffer)] = []
        batch.forEachRow(storedAt: lastToken) { token, _, row in
            if token <= storedThrough { resentRows.append((token, ByteBuffer(bytes: row))) }
        }
        let storedByToken = Dictionary(grouping: storedRows, by: \.token)
        let resentByToken = Dictionary(grouping: resentRows, by: \.token)
        // A row-less batch (a writer's POSITION) is at its token too: nothing may be stored there.
        var tokens = Set(storedByToken.keys).union(resentByToken.keys)
        if lastToken <= storedThrough { tokens.insert(lastToken) }
        for token in tokens.sorted() {
            let kept = storedByToken[token]?.map(\.row) ?? []
            let sent = resentByToken[token]?.map(\.row) ?? []
            guard !kept.isEmpty || sent.isEmpty else {
                return .differs(token: token, "nothing is stored at token \(token)")
            }
            guard kept.count == sent.count else {
                return .differs(
                    token: token,
                    "the log stores \(rows(kept.count)) at token \(token), the re-sent batch has \(sent.count)")
            }
            for (index, (keptRow, sentRow)) in zip(kept, sent).enumerated() where keptRow != sentRow {
                let byte = zip(keptRow.readableBytesView, sentRow.readableBytesView).prefix { $0 == $1 }.count
                return .differs(
                    token: token,
                    "row \(index + 1) of \(kept.count) at token \(token) differs from the stored row "
                        + "at byte \(byte + 1)")
            }
        }
        return .identical
    }

    private func rows(_ count: Int) -> String { count == 1 ? "1 row" : "\(count) rows" }
}

extension StreamLog {
    /// Compares a re-sent batch with the rows the log stores under its tokens, read page by page as
    /// catch-up reads them (away from the event loop when reading takes I/O). The log may have accepted
    /// those rows from the writer's previous connection without having committed them yet: the reading
    /// waits for the head to reach them, looking again every few milliseconds, for at most `patience`.
    /// Fails with a ``StreamLogError``: `fallenBehind` when the rows are no longer kept, `storage`
    /// otherwise.
    public func compare(
        _ resent: ResentBatch, pageBytes: Int, patience: TimeAmount, on eventLoop: any EventLoop
    ) -> EventLoopFuture<ResentBatch.Verdict> {
        committed(resent, by: .now() + patience, on: eventLoop).flatMap {
            self.storedLines(
                resent.stream, after: resent.firstToken - 1, through: resent.storedThrough, pageBytes: pageBytes,
                collected: ByteBuffer(), on: eventLoop)
        }.map { resent.compare(withStored: $0) }
    }

    private func committed(_ resent: ResentBatch, by deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<Void>
    {
        guard currentToken(of: resent.stream) < resent.storedThrough else { return eventLoop.makeSucceededVoidFuture() }
        guard NIODeadline.now() < deadline else {
            return eventLoop.makeFailedFuture(
                StreamLogError.storage("the stored rows it repeats were accepted but not committed in time"))
        }
        return eventLoop.scheduleTask(in: .milliseconds(5)) {}.futureResult.flatMap {
            self.committed(resent, by: deadline, on: eventLoop)
        }
    }

    private func storedLines(
        _ stream: StreamName, after token: Int64, through last: Int64, pageBytes: Int, collected: ByteBuffer,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<ByteBuffer> {
        read(stream, after: token, maxBytes: pageBytes, on: eventLoop).flatMap { page in
            var collected = collected
            var lines = page.lines
            collected.writeBuffer(&lines)
            guard !page.reachedHead, page.endToken < last else { return eventLoop.makeSucceededFuture(collected) }
            return self.storedLines(
                stream, after: page.endToken, through: last, pageBytes: pageBytes, collected: collected, on: eventLoop)
        }
    }
}
