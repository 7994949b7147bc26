import NIOCore
import StreamLog

/// Streams kept in a store shared by hubs on several hosts (Redis): a hub publishes its appends there
/// instead of storing them, and stores, through ``ReplicationHub/store(_:on:)``, what it reads back from
/// there, its own batches included, so that every hub stores the same batches in the same order.
public protocol SharedStreams: Sendable {
    /// Publishes batches, in order, up to the first one refused; the future completes on `eventLoop` once
    /// the accepted ones are in the shared store and in this hub's log.
    func publish(_ batches: [NewBatch], on eventLoop: any EventLoop) -> EventLoopFuture<AppendResults>
}
