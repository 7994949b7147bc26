import NIOCore
import ReplicationCore
import StreamLog

extension WriterIngest {
    /// What the log made of a writer's batches (``acknowledgements(of:_:)``).
    typealias Stored = (positions: [StreamPosition], refusal: ClosingError?, resent: Resent?)

    /// Hands batches to the hub in one append (all the rows of a read): the future of what was stored, or
    /// `nil` when there is no batch.
    static func append(
        _ submitted: [Submitted], to hub: ReplicationHub, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Stored>? {
        guard !submitted.isEmpty else { return nil }
        return hub.append(submitted.map(\.batch), on: eventLoop).mapOutcome { outcome -> Stored in
            let stored = acknowledgements(of: outcome, submitted)
            if !stored.positions.isEmpty { hub.count { $0.writerAppends += stored.positions.count } }
            return stored
        }
    }
}

extension WriterIngest.Resent {
    /// How long a re-sent batch waits for the rows it repeats to be committed (accepted from the writer's
    /// previous connection, their commit under way) before the writer is told to try again.
    static let patience = TimeAmount.seconds(30)

    /// Compares the batch with what the log stores under its tokens: the acknowledgements it gets again
    /// when it is the same, or the refusal that closes the writer.
    func compared(
        in hub: ReplicationHub, pageBytes: Int, on eventLoop: any EventLoop
    ) -> EventLoopFuture<(positions: [StreamPosition], refusal: ClosingError?)> {
        hub.log.compare(batch, pageBytes: pageBytes, patience: Self.patience, on: eventLoop).mapOutcome { compared in
            guard let refusal = refusal(compared) else {
                hub.count { $0.writerResentBatches += 1 }
                return (batch.positions, nil)
            }
            return ([], refusal)
        }
    }
}
