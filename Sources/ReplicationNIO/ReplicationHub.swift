import Logging
import NIOConcurrencyHelpers
import NIOCore
import ReplicationCore
import StreamLog

/// What the hub needs of a connection: rows to deliver and a way to end it. Called on its event loop only.
protocol HubConnection: AnyObject {
    /// New batches of one stream, in log order, and the same as one batch when they leave no gap.
    func deliver(_ batches: [AppendedBatch], joined: AppendedBatch?)
    /// Sends `ERROR server shutting down` and closes, aborting after `grace` if the peer does not go;
    /// the future completes when the channel is closed.
    func shutDown(grace: TimeAmount) -> EventLoopFuture<Void>
    func snapshot() -> ConnectionSnapshot
}

/// The connections of one event loop. Confined to that loop: no locks on the fan-out path.
final class LoopFanout {
    private var connections: [ObjectIdentifier: HubConnection] = [:]
    private var subscribers = [[ObjectIdentifier: HubConnection]](repeating: [:], count: StreamName.all.count)
    /// Commands of this loop's closed connections, per name: the command counters keep counting.
    private var closedCommands = ConnectionTotals()

    func add(_ connection: HubConnection) { connections[ObjectIdentifier(connection)] = connection }

    func remove(_ connection: HubConnection) {
        let id = ObjectIdentifier(connection)
        connections[id] = nil
        for index in subscribers.indices { subscribers[index][id] = nil }
    }

    /// Removes a connection that has closed, keeping what it counted.
    func retire(_ connection: HubConnection) {
        remove(connection)
        let final = connection.snapshot()
        closedCommands.addClosed(name: final.name, counters: final.counters)
    }

    func subscribe(_ connection: HubConnection, to stream: StreamName) {
        subscribers[stream.index][ObjectIdentifier(connection)] = connection
    }

    /// Hands new batches to every subscriber of their stream on this loop, in log order: each run of
    /// consecutive batches of one stream at once, in pieces of at most `joinLimit` bytes.
    func deliver(_ batches: [AppendedBatch]) {
        var start = batches.startIndex
        while start < batches.endIndex {
            let stream = batches[start].stream
            var end = start
            var bytes = 0
            while end < batches.endIndex, batches[end].stream == stream, end == start || bytes < Self.joinLimit {
                bytes += batches[end].liveLines.readableBytes
                end += 1
            }
            let piece = Array(batches[start..<end])
            let joined = Self.joined(piece)
            // Iterating a value copy: a subscriber may close (and leave the dictionary) while we deliver.
            for subscriber in subscribers[stream.index].values { subscriber.deliver(piece, joined: joined) }
            start = end
        }
    }

    /// A subscriber that takes a whole piece live gets it as one buffer, copied once per loop rather
    /// than written batch by batch to every subscriber; at most this many bytes, so that a subscriber
    /// that stops reading holds little more than its high-water mark.
    static let joinLimit = 64 * 1024

    /// The piece as one batch, when its batches follow each other without a gap.
    static func joined(_ piece: [AppendedBatch]) -> AppendedBatch? {
        guard piece.count > 1 else { return piece.first }
        var lines = ByteBufferAllocator().buffer(capacity: piece.reduce(0) { $0 + $1.liveLines.readableBytes })
        var rows = 0
        for (index, batch) in piece.enumerated() {
            guard index == 0 || batch.previousToken == piece[index - 1].token else { return nil }
            var batchLines = batch.liveLines
            lines.writeBuffer(&batchLines)
            rows += batch.rowCount
        }
        return AppendedBatch(
            stream: piece[0].stream, previousToken: piece[0].previousToken, token: piece.last!.token, rowCount: rows,
            liveLines: lines)
    }

    func shutDownAll(grace: TimeAmount) -> [EventLoopFuture<Void>] {
        connections.values.map { $0.shutDown(grace: grace) }
    }

    func snapshots() -> [ConnectionSnapshot] { connections.values.map { $0.snapshot() } }

    /// This loop's connections summed per name, where they live: a scrape copies one value per loop.
    func totals() -> ConnectionTotals {
        var totals = closedCommands
        for connection in connections.values { totals.add(connection.snapshot()) }
        return totals
    }
}

/// How batches reach one event loop: appends queue them here, and only the append that finds the queue
/// empty hops to the loop, which then takes everything queued by then. Under load that is one hop and one
/// flush per subscriber for many appends; when idle, a batch goes out at once.
final class LoopHandle: Sendable {
    let fanout: NIOLoopBound<LoopFanout>
    private let queued = NIOLockedValueBox<[AppendedBatch]>([])

    init(fanout: NIOLoopBound<LoopFanout>) { self.fanout = fanout }

    func hand(_ batches: [AppendedBatch]) {
        let first = queued.withLockedValue { queued in
            queued.append(contentsOf: batches)
            return queued.count == batches.count
        }
        guard first else { return }
        fanout.eventLoop.execute {
            let batches = self.queued.withLockedValue { queued in
                defer { queued.removeAll(keepingCapacity: true) }
                return queued
            }
            self.fanout.value.deliver(batches)
        }
    }
}

/// The server's shared core: the log, the fan-out to every event loop, and the process-wide counters.
public final class ReplicationHub: Sendable {
    public let log: any StreamLog
    /// Set in relay mode: where workers' commands go and where rows older than the log come from.
    public let upstream: (any Upstream)?
    /// Set when this hub's streams are shared with hubs on other hosts: appends go there first.
    public let shared: (any SharedStreams)?
    /// What workers' commands do here; chosen once, with the upstream, so that no connection asks.
    let routing: any CommandRouting
    private let fanouts = NIOLockedValueBox<[ObjectIdentifier: LoopHandle]>([:])
    private let counters = NIOLockedValueBox(HubCounters())

    public init(log: any StreamLog, upstream: (any Upstream)? = nil, shared: (any SharedStreams)? = nil) {
        self.log = log
        self.upstream = upstream
        self.shared = shared
        self.routing = upstream == nil ? HubRouting(fetchesRowsOlderThanTheLog: shared != nil) : RelayRouting()
    }

    /// Rows older than the log, from upstream or the shared streams; a hub alone has nowhere to fetch them from.
    func olderRows(_ stream: StreamName, after token: Int64, through: Int64, on eventLoop: any EventLoop)
        -> EventLoopFuture<LogPage>
    {
        upstream?.backfill(stream, after: token, through: through, on: eventLoop)
            ?? shared?.backfill(stream, after: token, through: through, on: eventLoop)
            ?? eventLoop.makeFailedFuture(StreamLogError.fallenBehind(oldestServable: through))
    }

    /// The fan-out of the calling event loop, created on first use.
    func fanout(on eventLoop: any EventLoop) -> LoopFanout {
        eventLoop.preconditionInEventLoop()
        return fanouts.withLockedValue { fanouts in
            if let existing = fanouts[ObjectIdentifier(eventLoop)] { return existing.fanout.value }
            let created = LoopFanout()
            fanouts[ObjectIdentifier(eventLoop)] = LoopHandle(fanout: NIOLoopBound(created, eventLoop: eventLoop))
            return created
        }
    }

    /// Appends batches: through the shared streams when there are some (they come back through ``store``),
    /// straight into the log otherwise.
    public func append(_ batches: [NewBatch], on eventLoop: any EventLoop) -> EventLoopFuture<AppendResults> {
        shared?.publish(batches, on: eventLoop) ?? store(batches, on: eventLoop)
    }

    /// Stores batches in the log; once stored, every event loop is handed the accepted ones at once, from
    /// the thread that stored them (one hop per loop, none through the appending connection's loop).
    public func store(_ batches: [NewBatch], on eventLoop: any EventLoop) -> EventLoopFuture<AppendResults> {
        log.append(batches, on: eventLoop) { results in
            let accepted = results.compactMap { try? $0.get() }
            guard !accepted.isEmpty else { return }
            self.counters.withLockedValue { counters in
                for batch in accepted { counters.streamUpdates[batch.stream.index] += batch.rowCount }
            }
            for loop in self.fanouts.withLockedValue({ Array($0.values) }) { loop.hand(accepted) }
        }
    }

    /// Appends one batch; the future fails if the log refuses it.
    public func append(
        _ rows: [String], to stream: StreamName, token: AppendToken, on eventLoop: any EventLoop
    ) -> EventLoopFuture<AppendedBatch> {
        append([NewBatch(stream: stream, rows: rows, token: token)], on: eventLoop).flatMapThrowing { try $0[0].get() }
    }

    /// Counts something a client asked for.
    func count(_ update: (inout HubCounters) -> Void) { counters.withLockedValue(update) }

    /// A copy of the process-wide counters.
    public var countersSnapshot: HubCounters { counters.withLockedValue { $0 } }

    /// A snapshot of every open connection, each taken on its own event loop (one hop per loop).
    package func connectionSnapshots(on eventLoop: any EventLoop) -> EventLoopFuture<[ConnectionSnapshot]> {
        let perLoop = fanouts.withLockedValue { Array($0.values) }.map(\.fanout).map { fanout in
            fanout.eventLoop.submit { fanout.value.snapshots() }
        }
        return EventLoopFuture.whenAllSucceed(perLoop, on: eventLoop).map { $0.flatMap { $0 } }
    }

    /// Every open connection summed per name, each loop summing its own (one hop per loop).
    public func connectionTotals(on eventLoop: any EventLoop) -> EventLoopFuture<ConnectionTotals> {
        let perLoop = fanouts.withLockedValue { Array($0.values) }.map(\.fanout).map { fanout in
            fanout.eventLoop.submit { fanout.value.totals() }
        }
        return EventLoopFuture.whenAllSucceed(perLoop, on: eventLoop).map { loops in
            loops.reduce(into: ConnectionTotals()) { $0.merge($1) }
        }
    }

    /// Sends `ERROR server shutting down` to every connection; completes when all have closed, which
    /// is at most `grace` later.
    public func shutDownAllConnections(grace: TimeAmount, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let perLoop = fanouts.withLockedValue { Array($0.values) }.map(\.fanout).map { fanout in
            fanout.eventLoop.flatSubmit {
                EventLoopFuture.andAllComplete(fanout.value.shutDownAll(grace: grace), on: fanout.eventLoop)
            }
        }
        return EventLoopFuture.andAllComplete(perLoop, on: eventLoop)
    }
}
