import NIOCore
import ReplicationCore
import StreamLog

/// What a relay's server asks of its upstream connection. In relay mode the rows come from upstream,
/// so the commands that would change the upstream's state go there, and a worker asking for rows older
/// than the relay's log is served from there. Called from any event loop.
public protocol Upstream: Sendable {
    /// A worker's `USER_SYNC`, `FEDERATION_ACK`, `REMOVE_PUSHER`, `INVALIDATE_CACHE` or `USER_IP`.
    func forward(_ command: Command)

    /// The rows of `stream` after `token` up to and including `through` (what the relay's log does not
    /// have), fetched from upstream, as catch-up lines; the page ends at `through`.
    func backfill(_ stream: StreamName, after token: Int64, through: Int64, on eventLoop: any EventLoop)
        -> EventLoopFuture<LogPage>
}
