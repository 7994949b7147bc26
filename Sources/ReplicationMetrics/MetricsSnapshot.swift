import ReplicationCore

/// Everything one scrape shows, collected first and rendered afterwards: rendering never touches a
/// connection.
public struct MetricsSnapshot: Sendable {
    public var connections: ConnectionTotals
    public var counters: HubCounters
    /// Current token per stream, by ``StreamName/index``.
    public var headTokens: [Int64]
    public var process: ProcessStatistics?
    public var scrapes: ScrapeStatistics
    /// A relay's upstream connection; nil for a hub.
    public var upstream: UpstreamStatus?
    /// What `replication_sidecar_build_info` says: this build unless a test fixes it.
    public var version = BuildInfo.version
    public var revision = BuildInfo.revision

    public init(
        connections: ConnectionTotals, counters: HubCounters, headTokens: [Int64],
        process: ProcessStatistics?, scrapes: ScrapeStatistics, upstream: UpstreamStatus? = nil
    ) {
        self.upstream = upstream
        self.connections = connections
        self.counters = counters
        self.headTokens = headTokens
        self.process = process
        self.scrapes = scrapes
    }
}

/// The exporter's own figures.
public struct ScrapeStatistics: Sendable, Equatable {
    public var lastDurationSeconds: Double
    public var errors: Int
    /// HTTP connections closed for not sending their request headers in time.
    public var slowClientsClosed: Int

    public init(lastDurationSeconds: Double = 0, errors: Int = 0, slowClientsClosed: Int = 0) {
        self.lastDurationSeconds = lastDurationSeconds
        self.errors = errors
        self.slowClientsClosed = slowClientsClosed
    }
}
