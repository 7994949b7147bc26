import NIOCore
import ReplicationCore
import ReplicationNIO
import StreamLog

/// One short-lived upstream subscription that fetches the rows of one stream a worker asked for but the
/// relay's log does not hold: everything after the worker's token up to the start of the log. It ends at
/// the upstream's `POSITION` (its catch-up is over) or at the first row past the range. Subscribed at
/// `NOW`, it only asks whether the upstream offers the stream.
final class Backfill {
    var client: ReplicationClient?
    /// Fails the fetch if upstream has not answered in time; cancelled when it ends sooner.
    var timeout: Scheduled<Void>?
    private let stream: StreamName
    private let through: Int64
    private let maxBytes: Int
    private let promise: EventLoopPromise<LogPage>
    private let finished: (Backfill) -> Void
    private var lines = ByteBuffer()
    private var rowCount = 0
    private var done = false

    init(
        stream: StreamName, through: Int64, maxBytes: Int, promise: EventLoopPromise<LogPage>,
        finished: @escaping (Backfill) -> Void
    ) {
        self.stream = stream
        self.through = through
        self.maxBytes = maxBytes
        self.promise = promise
        self.finished = finished
    }

    func finish(_ result: Result<LogPage, any Error>) {
        guard !done else { return }
        done = true
        timeout?.cancel()
        client?.stop()
        client = nil
        promise.completeWith(result)
        finished(self)
    }

    private func complete() {
        finish(.success(LogPage(lines: lines, rowCount: rowCount, endToken: through, reachedHead: false)))
    }
}

extension Backfill: ReplicationClientDelegate {
    func replicationClient(received rows: [String], stream: StreamName, token: Int64) {
        guard stream == self.stream, !done else { return }
        guard token <= through else { return complete() }
        RowLines.catchUp(RowTexts(rows), stream: stream, token: token, into: &lines)
        rowCount += rows.count
        if lines.readableBytes > maxBytes {
            finish(.failure(UpstreamError("more than \(maxBytes) bytes of rows to fetch from upstream")))
        }
    }

    func replicationClient(position token: Int64, stream: StreamName) {
        if stream == self.stream { complete() }
    }

    func replicationClientFinishedConnecting() {}

    func replicationClient(serverError text: String) {
        finish(.failure(UpstreamError("upstream refused: \(text)", refused: RemoteError(text).refusesReplicate)))
    }

    func replicationClient(badRow reason: String, stream: String) {
        finish(.failure(UpstreamError("upstream sent a bad row: \(reason)")))
    }

    func replicationClient(closingWithError text: String) {
        finish(.failure(UpstreamError(text)))
    }

    func replicationClient(connected: Bool, retryInMillis: Int64?) {
        if !connected { finish(.failure(UpstreamError("upstream connection lost"))) }
    }
}
