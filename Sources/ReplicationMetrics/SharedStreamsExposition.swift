import ReplicationCore

/// The families of `serve --redis`: the Redis the streams are shared through.
public enum SharedStreamsMetricFamilies {
    public static let all: [MetricFamily] = [
        connected, reconnects, commandSeconds, entriesWritten, entriesRead, entriesTrimmed, lag, diverged, errors,
        refusedWrites, abortedTransactions, backfills,
    ]

    static let prefix = "replication_sidecar_redis_streams_"

    public static let connected = MetricFamily(
        name: prefix + "connected", kind: .gauge,
        help: "1 while the Redis connection of each role (commands: writes; follower: XREAD) is ready.")
    public static let reconnects = MetricFamily(
        name: prefix + "reconnects", kind: .counter,
        help: "Redis connections of each role lost or that failed to get ready (each is retried with back-off).")
    public static let commandSeconds = MetricFamily(
        name: prefix + "command_seconds", kind: .histogram,
        help: "Time from sending publishes to Redis (a transaction, or the append script) to its answer.")
    public static let entriesWritten = MetricFamily(
        name: prefix + "entries_written", kind: .counter,
        help: "Entries (batches) this sidecar added to Redis, per stream.")
    public static let entriesRead = MetricFamily(
        name: prefix + "entries_read", kind: .counter,
        help: "Entries read back from Redis and stored in the local log, per stream (this sidecar's own included).")
    public static let entriesTrimmed = MetricFamily(
        name: prefix + "entries_trimmed", kind: .counter,
        help: "Entries this sidecar trimmed from Redis (XTRIM) as --retain-rows and --retain-age no longer keep them, "
            + "per stream.")
    public static let lag = MetricFamily(
        name: prefix + "lag_tokens", kind: .gauge,
        help: "Tokens the last entry seen in Redis is ahead of the local log, per stream.")
    public static let diverged = MetricFamily(
        name: prefix + "diverged", kind: .gauge,
        help: "1 for a stream whose Redis key is behind the local log (Redis lost data): writes are refused.")
    public static let errors = MetricFamily(
        name: prefix + "errors", kind: .counter,
        help: "Errors by kind: read (XREAD failed), entry (not a batch), store (local log), script (append failed).")
    /// The label values of ``errors``, ``refusedWrites`` and ``backfills``, exported from 0 so that `increase()`
    /// sees the first one happen.
    public static let errorKinds = ["read", "entry", "store", "script"]
    public static let refusalReasons = ["token_taken", "unavailable", "diverged", "not_replicated", "failed"]
    public static let backfillResults = ["ok", "fallen_behind", "failed"]

    public static let refusedWrites = MetricFamily(
        name: prefix + "refused_writes", kind: .counter,
        help: "Publishes refused, by reason: token_taken, unavailable, diverged, not_replicated, failed.")
    public static let abortedTransactions = MetricFamily(
        name: prefix + "aborted_transactions", kind: .counter,
        help: "Append transactions that added nothing, since a key was not as this sidecar expected (another writer "
            + "or sidecar added to it): their publishes are sent again.")
    public static let backfills = MetricFamily(
        name: prefix + "backfills", kind: .counter,
        help: "Pages of catch-up older than the local log read from Redis, by result: ok, fallen_behind (Redis no "
            + "longer has them either), failed.")
}

/// What one scrape of `serve --redis` shows of the shared streams.
public struct SharedStreamsFigures: Sendable {
    public struct Link: Sendable {
        public var role: String
        public var connected: Bool
        public var reconnects: Int

        public init(role: String, connected: Bool, reconnects: Int) {
            self.role = role
            self.connected = connected
            self.reconnects = reconnects
        }
    }

    public var links: [Link]
    /// Answers per bucket of ``commandBuckets`` (each counted once, in the first bucket it fits), then
    /// those slower than all; and the sum in seconds.
    public var commandCounts: [Int]
    public var commandSecondsSum: Double
    public var entriesWritten: [Int]
    public var entriesRead: [Int]
    public var redisTokens: [Int64]
    public var localTokens: [Int64]
    public var diverged: Set<StreamName>
    public var errors: [String: Int]
    public var refusedWrites: [String: Int]
    public var entriesTrimmed: [Int]
    public var backfills: [String: Int]
    public var abortedTransactions: Int

    /// Upper bounds in seconds.
    public static let commandBuckets: [Double] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5,
    ]

    public init(
        links: [Link], commandCounts: [Int], commandSecondsSum: Double, entriesWritten: [Int], entriesRead: [Int],
        redisTokens: [Int64], localTokens: [Int64], diverged: Set<StreamName>, errors: [String: Int],
        refusedWrites: [String: Int], entriesTrimmed: [Int], backfills: [String: Int], abortedTransactions: Int
    ) {
        self.links = links
        self.commandCounts = commandCounts
        self.commandSecondsSum = commandSecondsSum
        self.entriesWritten = entriesWritten
        self.entriesRead = entriesRead
        self.redisTokens = redisTokens
        self.localTokens = localTokens
        self.diverged = diverged
        self.errors = errors
        self.refusedWrites = refusedWrites
        self.entriesTrimmed = entriesTrimmed
        self.backfills = backfills
        self.abortedTransactions = abortedTransactions
    }
}

extension Exposition {
    public static func families(_ figures: SharedStreamsFigures) -> [FamilySamples] {
        let streams = StreamName.all.map { ($0, "stream_name=\"\($0.rawValue)\"") }
        func perStream(_ family: MetricFamily, _ value: (StreamName) -> Double) -> FamilySamples {
            FamilySamples(family: family, samples: streams.map { .init(labels: $0.1, value: value($0.0)) })
        }
        func perLabel(
            _ family: MetricFamily, _ label: String, known: [String], _ counts: [String: Int]
        ) -> FamilySamples {
            FamilySamples(
                family: family,
                samples: Set(known).union(counts.keys).sorted().map {
                    .init(labels: "\(label)=\"\(escape($0, quotes: true))\"", value: Double(counts[$0, default: 0]))
                })
        }
        var histogram: [FamilySamples.Sample] = []
        var cumulative = 0
        for (index, count) in figures.commandCounts.enumerated() {
            cumulative += count
            let buckets = SharedStreamsFigures.commandBuckets
            let bound = index < buckets.count ? "\(buckets[index])" : "+Inf"
            histogram.append(.init(labels: "le=\"\(bound)\"", value: Double(cumulative), suffix: "_bucket"))
        }
        histogram.append(.init(labels: "", value: figures.commandSecondsSum, suffix: "_sum"))
        histogram.append(.init(labels: "", value: Double(cumulative), suffix: "_count"))
        return [
            FamilySamples(
                family: SharedStreamsMetricFamilies.connected,
                samples: figures.links.map { .init(labels: "role=\"\($0.role)\"", value: $0.connected ? 1 : 0) }),
            FamilySamples(
                family: SharedStreamsMetricFamilies.reconnects,
                samples: figures.links.map { .init(labels: "role=\"\($0.role)\"", value: Double($0.reconnects)) }),
            FamilySamples(family: SharedStreamsMetricFamilies.commandSeconds, samples: histogram),
            perStream(SharedStreamsMetricFamilies.entriesWritten) { Double(figures.entriesWritten[$0.index]) },
            perStream(SharedStreamsMetricFamilies.entriesRead) { Double(figures.entriesRead[$0.index]) },
            perStream(SharedStreamsMetricFamilies.entriesTrimmed) { Double(figures.entriesTrimmed[$0.index]) },
            perStream(SharedStreamsMetricFamilies.lag) {
                Double(max(0, figures.redisTokens[$0.index] - figures.localTokens[$0.index]))
            },
            perStream(SharedStreamsMetricFamilies.diverged) { figures.diverged.contains($0) ? 1 : 0 },
            perLabel(
                SharedStreamsMetricFamilies.errors, "kind", known: SharedStreamsMetricFamilies.errorKinds,
                figures.errors),
            perLabel(
                SharedStreamsMetricFamilies.refusedWrites, "reason", known: SharedStreamsMetricFamilies.refusalReasons,
                figures.refusedWrites),
            FamilySamples(
                family: SharedStreamsMetricFamilies.abortedTransactions,
                samples: [.init(labels: "", value: Double(figures.abortedTransactions))]),
            perLabel(
                SharedStreamsMetricFamilies.backfills, "result", known: SharedStreamsMetricFamilies.backfillResults,
                figures.backfills),
        ]
    }
}
