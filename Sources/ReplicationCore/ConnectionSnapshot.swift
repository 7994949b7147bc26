/// What one connection looks like at one instant, copied out on its own event loop when asked
/// (by a metrics scrape or a test). Plain values only: readers on other threads never touch the connection.
public struct ConnectionSnapshot: Sendable, Equatable {
    public var name: String
    public var peer: String
    public var isWriter: Bool
    public var connectedAtMillis: Int64
    /// Commands queued while the connection is paused.
    public var pendingCommands: Int
    /// Bytes the transport holds in user space, not yet handed to the kernel.
    public var bufferedWritableBytes: Int
    /// Bytes in the kernel's send queue not yet acknowledged by the peer (`SIOCOUTQ`).
    public var kernelSendQueue: Int
    /// Bytes in the kernel's receive queue not yet read by the server (`SIOCINQ`).
    public var kernelReceiveQueue: Int
    public var counters: CommandCounters
    /// Per stream (by ``StreamName/index``): the last token written to this connection, if subscribed.
    public var sentTokens: [Int64?]
    public var syncingUsers: Int

    public init(
        name: String, peer: String, isWriter: Bool, connectedAtMillis: Int64, pendingCommands: Int,
        bufferedWritableBytes: Int, kernelSendQueue: Int = 0, kernelReceiveQueue: Int = 0, counters: CommandCounters, sentTokens: [Int64?], syncingUsers: Int
    ) {
        self.name = name
        self.peer = peer
        self.isWriter = isWriter
        self.connectedAtMillis = connectedAtMillis
        self.pendingCommands = pendingCommands
        self.bufferedWritableBytes = bufferedWritableBytes
        self.kernelSendQueue = kernelSendQueue
        self.kernelReceiveQueue = kernelReceiveQueue
        self.counters = counters
        self.sentTokens = sentTokens
        self.syncingUsers = syncingUsers
    }
}
