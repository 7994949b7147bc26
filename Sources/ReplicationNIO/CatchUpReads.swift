import NIOCore
import ReplicationCore
import StreamLog

/// Where a connection's catch-up comes from: pages of the log, and rows older than the log from where the
/// hub gets them. A failure is counted and logged here; the session is told what came of each read.
struct CatchUpReads: Sendable {
    let hub: ReplicationHub
    /// Bytes of one page (``ServerConfiguration/catchUpPageBytes``).
    let pageBytes: Int

    func page(
        _ stream: StreamName, after: Int64, log: ConnectionLog, on eventLoop: any EventLoop
    ) -> EventLoopFuture<PageRead<ByteBuffer>> {
        hub.log.read(stream, after: after, maxBytes: pageBytes, on: eventLoop).mapOutcome { [hub] result in
            let read = StreamLogError.pageRead(result)
            if case .failed(let why) = read {
                hub.count { $0.storageReadErrors += 1 }
                log.readFailed(stream, after: after, why)
            }
            return read
        }
    }

    func olderRows(
        _ stream: StreamName, after: Int64, through: Int64, log: ConnectionLog, on eventLoop: any EventLoop
    ) -> EventLoopFuture<PageRead<ByteBuffer>> {
        log.fetchingOlderRows(stream, after: after)
        return hub.olderRows(stream, after: after, through: through, on: eventLoop).mapOutcome { result in
            if case .failure(let error) = result { log.olderRowsUnavailable(stream, error) }
            return StreamLogError.pageRead(result)
        }
    }
}
