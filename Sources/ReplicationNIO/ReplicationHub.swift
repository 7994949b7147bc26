import Logging
import NIOConcurrencyHelpers
import NIOCore
import ReplicationCore
import StreamLog

/// What the hub needs of a connection: rows to deliver and a way to end it. Called on its event loop only.
protocol HubConnection: AnyObject {
    func deliver(_ batch: AppendedBatch)
    /// Sends `ERROR server shutting down` and closes, aborting after `grace` if the peer does not go;
    /// the future completes when the channel is closed.
    func shutDown(grace: TimeAmount) -> EventLoopFuture<Void>
    func snapshot() -> ConnectionSnapshot
}

/// The connections of one event loop. Confined to that loop: no locks on the fan-out path.
final class LoopFanout {
    private var connections: [ObjectIdentifier: HubConnection] = [:]
    private var subscribers = [[ObjectIdentifier: HubConnection]](repeating: [:], count: StreamName.all.count)

    func add(_ connection: HubConnection) { connections[ObjectIdentifier(connection)] = connection }

    func remove(_ connection: HubConnection) {
        let id = ObjectIdentifier(connection)
        connections[id] = nil
        for index in subscribers.indices { subscribers[index][id] = nil }
    }

    func subscribe(_ connection: HubConnection, to stream: StreamName) {
        subscribers[stream.index][ObjectIdentifier(connection)] = connection
    }

    /// Writes a new batch to every subscriber of its stream on this loop.
    func deliver(_ batch: AppendedBatch) {
        // Iterating a value copy: a subscriber may close (and leave the dictionary) while we deliver.
        for subscriber in subscribers[batch.stream.index].values { subscriber.deliver(batch) }
    }

    func shutDownAll(grace: TimeAmount) -> [EventLoopFuture<Void>] {
        connections.values.map { $0.shutDown(grace: grace) }
    }

    func snapshots() -> [ConnectionSnapshot] { connections.values.map { $0.snapshot() } }

    /// This loop's connections summed per name, where they live: a scrape copies one value per loop.
    func totals() -> ConnectionTotals {
        var totals = ConnectionTotals()
        for connection in connections.values { totals.add(connection.snapshot()) }
        return totals
    }
}

/// The server's shared core: the log, the fan-out to every event loop, and the process-wide counters.
public final class ReplicationHub: Sendable {
    public let log: any StreamLog
    private let fanouts = NIOLockedValueBox<[ObjectIdentifier: NIOLoopBound<LoopFanout>]>([:])
    private let counters = NIOLockedValueBox(HubCounters())

    public init(log: any StreamLog) {
        self.log = log
    }

    /// The fan-out of the calling event loop, created on first use.
    func fanout(on eventLoop: any EventLoop) -> LoopFanout {
        eventLoop.preconditionInEventLoop()
        return fanouts.withLockedValue { fanouts in
            if let existing = fanouts[ObjectIdentifier(eventLoop)] { return existing.value }
            let created = LoopFanout()
            fanouts[ObjectIdentifier(eventLoop)] = NIOLoopBound(created, eventLoop: eventLoop)
            return created
        }
    }

    /// Appends rows; once the log has accepted them, every event loop is handed the batch once.
    public func append(
        _ rows: [String], to stream: StreamName, token: AppendToken, on eventLoop: any EventLoop
    ) -> EventLoopFuture<AppendedBatch> {
        log.append(rows, to: stream, token: token, on: eventLoop).map { batch in
            self.counters.withLockedValue { $0.streamUpdates[stream.index] += batch.rowCount }
            self.broadcast(batch)
            return batch
        }
    }

    private func broadcast(_ batch: AppendedBatch) {
        for fanout in fanouts.withLockedValue({ Array($0.values) }) {
            fanout.eventLoop.execute { fanout.value.deliver(batch) }
        }
    }

    /// Counts something a client asked for.
    func count(_ update: (inout HubCounters) -> Void) { counters.withLockedValue(update) }

    /// A copy of the process-wide counters.
    public var countersSnapshot: HubCounters { counters.withLockedValue { $0 } }

    /// A snapshot of every open connection, each taken on its own event loop (one hop per loop).
    public func connectionSnapshots(on eventLoop: any EventLoop) -> EventLoopFuture<[ConnectionSnapshot]> {
        let perLoop = fanouts.withLockedValue { Array($0.values) }.map { fanout in
            fanout.eventLoop.submit { fanout.value.snapshots() }
        }
        return EventLoopFuture.whenAllSucceed(perLoop, on: eventLoop).map { $0.flatMap { $0 } }
    }

    /// Every open connection summed per name, each loop summing its own (one hop per loop).
    public func connectionTotals(on eventLoop: any EventLoop) -> EventLoopFuture<ConnectionTotals> {
        let perLoop = fanouts.withLockedValue { Array($0.values) }.map { fanout in
            fanout.eventLoop.submit { fanout.value.totals() }
        }
        return EventLoopFuture.whenAllSucceed(perLoop, on: eventLoop).map { loops in
            loops.reduce(into: ConnectionTotals()) { $0.merge($1) }
        }
    }

    /// Sends `ERROR server shutting down` to every connection; completes when all have closed, which
    /// is at most `grace` later.
    public func shutDownAllConnections(grace: TimeAmount, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let perLoop = fanouts.withLockedValue { Array($0.values) }.map { fanout in
            fanout.eventLoop.flatSubmit {
                EventLoopFuture.andAllComplete(fanout.value.shutDownAll(grace: grace), on: fanout.eventLoop)
            }
        }
        return EventLoopFuture.andAllComplete(perLoop, on: eventLoop)
    }
}
