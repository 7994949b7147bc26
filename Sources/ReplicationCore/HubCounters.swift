/// Process-wide counts of what clients asked of the server (Synapse's `resource` counters).
public struct HubCounters: Sendable, Equatable {
    /// Rows appended per stream, indexed by ``StreamName/index``.
    public var streamUpdates = [Int](repeating: 0, count: StreamName.all.count)
    public var userSync = 0
    public var federationAck = 0
    public var removePusher = 0
    public var invalidateCache = 0
    public var userIP = 0
    /// Batches (or position advances) stored for writers, and writer lines refused.
    public var writerAppends = 0
    public var writerRejections = 0
    /// Batches a writer sent again (after a lost connection) that the log already stored as sent: acknowledged
    /// again, stored once.
    public var writerResentBatches = 0
    /// Catch-up pages the stream log failed to read (not "fallen behind": storage that cannot be read).
    public var storageReadErrors = 0
    /// The last token a `FEDERATION_ACK` carried, if any arrived.
    public var lastFederationAck: Int64?
    /// Connections ended, by how they ended.
    public var closeReasons: [CloseReason: Int] = [:]

    public init() {}

    /// Counts a worker's command that changes shared state.
    public mutating func count(_ command: Command) {
        switch command {
        case .userSync: userSync += 1
        case .federationAck(let token):
            federationAck += 1
            lastFederationAck = token
        case .removePusher: removePusher += 1
        case .invalidateCache: invalidateCache += 1
        case .userIP: userIP += 1
        default: break
        }
    }
}
