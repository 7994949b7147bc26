/// The protocol's limits and timers. Every default is the value Synapse 1.6 used, unless it says otherwise.
public struct ProtocolConfiguration: Sendable, Equatable {
    /// Longest line in either direction, delimiter excluded.
    public var maxLineLength: Int
    /// Commands queued while the connection is paused before it is closed with `Failed to keep up`.
    public var maxPendingCommands: Int
    /// How often the keepalive timer runs, and how long a side may stay silent before it pings.
    public var pingIntervalMillis: Int64
    /// Silence from a peer that has pinged before, after which it is timed out; also the grace period
    /// an unclean close gets before the connection is aborted.
    public var pingTimeoutMillis: Int64
    /// Rows a writer may hold in one unfinished `batch` (an unbounded batch would be an unbounded buffer).
    public var maxBatchRows: Int
    /// `INVALIDATE_CACHE`/`REMOVE_PUSHER` one connection may send per second, in bursts of up to ten
    /// seconds' worth: each makes every worker do work, so one client must not flood them.
    public var hubRowsPerSecond: Int
    /// Bytes of a writer's rows handed to the log and not yet stored, past which the writer is not read
    /// from until commits catch up (TCP pushes back on it): what waits for a commit stays bounded however
    /// fast a writer sends. Not a Synapse setting: Synapse has no log to wait for.
    public var maxUnstoredWriterBytes: Int
    /// How far above a stream's current token one writer's batch (or `POSITION`) may go. Not a Synapse
    /// setting: it keeps one bad batch from moving a stream to the end of the token range, where no later
    /// token fits. The default, 2^40, is far above any real stream's step, even a first batch on an empty
    /// log carrying a large deployment's whole history.
    public var maxTokenStep: Int64

    public init(
        maxLineLength: Int = 16384,
        maxPendingCommands: Int = 10_000,
        pingIntervalMillis: Int64 = 5_000,
        pingTimeoutMillis: Int64 = 25_000,
        maxBatchRows: Int = 10_000,
        hubRowsPerSecond: Int = 100,
        maxUnstoredWriterBytes: Int = 8 << 20,
        maxTokenStep: Int64 = 1 << 40
    ) {
        self.maxLineLength = maxLineLength
        self.maxPendingCommands = maxPendingCommands
        self.pingIntervalMillis = pingIntervalMillis
        self.pingTimeoutMillis = pingTimeoutMillis
        self.maxBatchRows = maxBatchRows
        self.hubRowsPerSecond = hubRowsPerSecond
        self.maxUnstoredWriterBytes = maxUnstoredWriterBytes
        self.maxTokenStep = maxTokenStep
    }
}
