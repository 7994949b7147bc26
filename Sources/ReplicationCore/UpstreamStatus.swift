/// A relay's upstream connection at one instant, for metrics.
public struct UpstreamStatus: Sendable, Equatable {
    public var connected = false
    /// Every stream has answered on this connection: the relay has caught up and receives rows live. Until
    /// then a lost connection keeps growing the reconnect delay, so that an upstream which accepts and then
    /// fails is not hammered.
    public var subscribed = false
    /// Connections made after the first one.
    public var reconnects = 0
    /// Per stream (by ``StreamName/index``): the last token received from upstream (rows or `POSITION`).
    public var receivedTokens = [Int64?](repeating: nil, count: StreamName.all.count)
    /// Per stream (by ``StreamName/index``): `RDATA` lines received from upstream (Synapse's client counts them).
    public var receivedRows = [Int](repeating: 0, count: StreamName.all.count)
    /// Per command (by ``CommandName/index``): workers' commands forwarded upstream.
    public var forwarded = [Int](repeating: 0, count: CommandName.allCases.count)
    /// Forwarded commands waiting for the upstream connection to come back.
    public var queuedCommands = 0
    /// Forwarded commands dropped because that queue was full.
    public var droppedCommands = 0
    /// Requests for rows older than the relay's log, answered and failed.
    public var backfills = 0
    public var failedBackfills = 0

    public init() {}
}
