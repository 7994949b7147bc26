/// What the open connections add up to, per connection name. Each event loop sums its own connections
/// where they live, and a scrape merges one value per loop: nothing per connection crosses threads.
public struct ConnectionTotals: Sendable, Equatable {
    /// What the connections sharing one name add up to.
    public struct PerName: Sendable, Equatable {
        public var pendingCommands = 0
        public var bufferedWritableBytes = 0
        public var kernelSendQueue = 0
        public var kernelReceiveQueue = 0
        public var syncingUsers = 0
        /// By ``CommandName/index``.
        public var inbound = [Int](repeating: 0, count: CommandName.allCases.count)
        public var outbound = [Int](repeating: 0, count: CommandName.allCases.count)
        /// The most lagging connection's token per stream (by ``StreamName/index``), if any subscribes.
        public var lowestSentTokens = [Int64?](repeating: nil, count: StreamName.all.count)
        /// When the oldest connection of this name opened (wall clock).
        public var oldestConnectedAtMillis = Int64.max

        init() {}

        /// One connection on its own.
        init(_ connection: ConnectionSnapshot) {
            pendingCommands = connection.pendingCommands
            bufferedWritableBytes = connection.bufferedWritableBytes
            kernelSendQueue = connection.kernelSendQueue
            kernelReceiveQueue = connection.kernelReceiveQueue
            syncingUsers = connection.syncingUsers
            inbound = connection.counters.inbound
            outbound = connection.counters.outbound
            lowestSentTokens = connection.sentTokens
            oldestConnectedAtMillis = connection.connectedAtMillis
        }

        mutating func merge(_ other: PerName) {
            pendingCommands += other.pendingCommands
            bufferedWritableBytes += other.bufferedWritableBytes
            kernelSendQueue += other.kernelSendQueue
            kernelReceiveQueue += other.kernelReceiveQueue
            syncingUsers += other.syncingUsers
            for index in inbound.indices {
                inbound[index] += other.inbound[index]
                outbound[index] += other.outbound[index]
            }
            for (index, token) in other.lowestSentTokens.enumerated() {
                guard let token else { continue }
                lowestSentTokens[index] = min(lowestSentTokens[index] ?? token, token)
            }
            oldestConnectedAtMillis = min(oldestConnectedAtMillis, other.oldestConnectedAtMillis)
        }
    }

    public private(set) var byName: [String: PerName] = [:]
    /// Commands per connection name since the server started: open connections and closed ones, so
    /// that a rate never sees a reset when one of several connections sharing a name goes.
    public private(set) var commandsByName: [String: CommandCounters] = [:]
    public private(set) var connectionCount = 0
    /// Connections subscribed per stream, by ``StreamName/index``.
    public private(set) var subscribers = [Int](repeating: 0, count: StreamName.all.count)

    public init() {}

    public init(_ connections: [ConnectionSnapshot]) {
        for connection in connections { add(connection) }
    }

    public mutating func add(_ connection: ConnectionSnapshot) {
        byName[connection.name, default: PerName()].merge(PerName(connection))
        commandsByName[connection.name, default: CommandCounters()].add(connection.counters)
        connectionCount += 1
        for (index, token) in connection.sentTokens.enumerated() where token != nil { subscribers[index] += 1 }
    }

    /// The commands of connections that have closed, kept in ``commandsByName``.
    public mutating func addClosed(name: String, counters: CommandCounters) {
        commandsByName[name, default: CommandCounters()].add(counters)
    }

    public mutating func merge(_ other: ConnectionTotals) {
        for (name, theirs) in other.byName { byName[name, default: PerName()].merge(theirs) }
        for (name, theirs) in other.commandsByName { commandsByName[name, default: CommandCounters()].add(theirs) }
        connectionCount += other.connectionCount
        for index in subscribers.indices { subscribers[index] += other.subscribers[index] }
    }
}
