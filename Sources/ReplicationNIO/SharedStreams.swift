import NIOCore
import ReplicationCore
import StreamLog

/// Streams kept in a store shared by hubs on several hosts (Redis): a hub publishes its appends there
/// instead of storing them, and stores, through ``ReplicationHub/store(_:on:)``, what it reads back from
/// there, its own batches included, so that every hub stores the same batches in the same order.
public protocol SharedStreams: Sendable {
    /// Publishes batches, in order, up to the first one refused; the future completes on `eventLoop` once
    /// the accepted ones are in the shared store and in this hub's log.
    func publish(_ batches: [NewBatch], on eventLoop: any EventLoop) -> EventLoopFuture<AppendResults>

    /// The rows of `stream` after `token` up to `through` (what this hub's log no longer has, or never had),
    /// read from the shared store as catch-up lines; the page ends at `through` or before, and fails with
    /// ``StreamLogError/fallenBehind(oldestServable:)`` when the shared store no longer has them either.
    func backfill(_ stream: StreamName, after token: Int64, through: Int64, on eventLoop: any EventLoop)
        -> EventLoopFuture<LogPage>
}
