import ReplicationCore

/// The families of `observe`: today's Synapse replication bus, and the Redis connection it is read from.
public enum BusMetricFamilies {
    public static let all: [MetricFamily] = [
        streamPosition, rows, commands, instanceLastSeen, gaps, syncingUsers, malformed, messageSize, probes,
        redisConnected, redisConnections, redisFailedAttempts, redisDisconnections, redisFailedCommands,
    ]

    static let bus = "replication_sidecar_bus_"
    static let redis = "replication_sidecar_redis_"

    public static let streamPosition = MetricFamily(
        name: bus + "stream_position", kind: .gauge,
        help: "The highest token seen from each writing instance per stream (RDATA and POSITION).")
    public static let rows = MetricFamily(
        name: bus + "rows", kind: .counter, help: "RDATA rows seen, per stream and writing instance.")
    public static let commands = MetricFamily(
        name: bus + "commands", kind: .counter, help: "Commands seen on the bus, by command.")
    public static let instanceLastSeen = MetricFamily(
        name: bus + "instance_last_seen_timestamp_seconds", kind: .gauge,
        help: "When a command naming each instance was last seen, in seconds since the epoch.")
    public static let gaps = MetricFamily(
        name: bus + "gaps", kind: .counter,
        help: "POSITIONs whose previous token was beyond the last token seen from that writer: rows never seen here.")
    public static let syncingUsers = MetricFamily(
        name: bus + "syncing_users", kind: .gauge, help: "Users (per device) each instance reported as syncing.")
    public static let malformed = MetricFamily(
        name: bus + "malformed_messages", kind: .counter,
        help:
            "Messages that were not a command this observer understands, by reason (a newer command is unknown_command)."
    )
    public static let messageSize = MetricFamily(
        name: bus + "message_size_bytes", kind: .histogram, help: "Sizes of the messages seen on the bus.")
    public static let probes = MetricFamily(
        name: bus + "probes", kind: .counter,
        help: "REPLICATE commands this observer published to make every writer announce its positions.")
    public static let redisConnected = MetricFamily(
        name: redis + "connected", kind: .gauge, help: "1 while the subscription to Redis is up, 0 while it reconnects."
    )
    public static let redisConnections = MetricFamily(
        name: redis + "connections", kind: .counter, help: "Redis connections that got ready (logged in, subscribed).")
    public static let redisFailedAttempts = MetricFamily(
        name: redis + "failed_connection_attempts", kind: .counter,
        help: "Attempts to connect to Redis that failed (refused, timed out, AUTH or SELECT refused).")
    public static let redisDisconnections = MetricFamily(
        name: redis + "disconnections", kind: .counter, help: "Ready Redis connections that were lost.")
    public static let redisFailedCommands = MetricFamily(
        name: redis + "failed_commands", kind: .counter,
        help: "Commands sent to Redis that failed (error reply, timeout, connection lost).")
}

/// One Redis connection's figures, labelled by its role (`subscriber`, `publisher`).
public struct RedisLinkFigures: Sendable, Equatable {
    public var role: String
    public var connected: Bool
    public var connections: Int
    public var failedAttempts: Int
    public var disconnections: Int
    public var failedCommands: Int

    public init(
        role: String, connected: Bool, connections: Int, failedAttempts: Int, disconnections: Int, failedCommands: Int
    ) {
        self.role = role
        self.connected = connected
        self.connections = connections
        self.failedAttempts = failedAttempts
        self.disconnections = disconnections
        self.failedCommands = failedCommands
    }
}

/// What one scrape of `observe` shows.
public struct BusSnapshot: Sendable {
    public var observation: BusObservation
    public var probes: Int
    public var redis: [RedisLinkFigures]
    public var process: ProcessStatistics?

    public init(observation: BusObservation, probes: Int, redis: [RedisLinkFigures], process: ProcessStatistics?) {
        self.observation = observation
        self.probes = probes
        self.redis = redis
        self.process = process
    }
}

extension Exposition {
    public static func families(_ snapshot: BusSnapshot) -> [FamilySamples] {
        let observation = snapshot.observation
        let writers = observation.writers.keys.sorted().map { writer in
            (
                "instance=\"\(escape(writer.instance, quotes: true))\",stream_name=\"\(escape(writer.stream, quotes: true))\"",
                observation.writers[writer]!
            )
        }
        let instances = observation.lastSeenMillis.keys.sorted()
        func instanceLabel(_ instance: String) -> String { "instance=\"\(escape(instance, quotes: true))\"" }
        func perWriter(_ family: MetricFamily, _ value: (BusObservation.WriterState) -> Double?) -> FamilySamples {
            FamilySamples(
                family: family,
                samples: writers.compactMap { labels, state in value(state).map { .init(labels: labels, value: $0) } })
        }
        func perRole(_ family: MetricFamily, _ value: (RedisLinkFigures) -> Int) -> FamilySamples {
            FamilySamples(
                family: family,
                samples: snapshot.redis.map { .init(labels: "role=\"\($0.role)\"", value: Double(value($0))) })
        }
        var sizeSamples: [FamilySamples.Sample] = []
        var cumulative = 0
        for (index, count) in observation.sizeCounts.enumerated() {
            cumulative += count
            let bound = index < BusObservation.sizeBuckets.count ? "\(BusObservation.sizeBuckets[index])" : "+Inf"
            sizeSamples.append(.init(labels: "le=\"\(bound)\"", value: Double(cumulative), suffix: "_bucket"))
        }
        sizeSamples.append(.init(labels: "", value: Double(observation.sizeSum), suffix: "_sum"))
        sizeSamples.append(.init(labels: "", value: Double(cumulative), suffix: "_count"))

        var families: [FamilySamples] = [
            perWriter(BusMetricFamilies.streamPosition) { $0.position.map(Double.init) },
            perWriter(BusMetricFamilies.rows) { Double($0.rows) },
            perWriter(BusMetricFamilies.gaps) { Double($0.gaps) },
            FamilySamples(
                family: BusMetricFamilies.commands,
                samples: zip(BusCommandName.allCases, observation.commands).map {
                    .init(labels: "command=\"\($0.rawValue)\"", value: Double($1))
                }),
            FamilySamples(
                family: BusMetricFamilies.instanceLastSeen,
                samples: instances.map {
                    .init(labels: instanceLabel($0), value: Double(observation.lastSeenMillis[$0]!) / 1000)
                }),
            FamilySamples(
                family: BusMetricFamilies.syncingUsers,
                samples: instances.map {
                    .init(labels: instanceLabel($0), value: Double(observation.syncing[$0]?.count ?? 0))
                }),
            FamilySamples(
                family: BusMetricFamilies.malformed,
                samples: zip(BusMalformedReason.allCases, observation.malformed).map {
                    .init(labels: "reason=\"\($0.rawValue)\"", value: Double($1))
                }),
            FamilySamples(family: BusMetricFamilies.messageSize, samples: sizeSamples),
            FamilySamples(
                family: BusMetricFamilies.probes, samples: [.init(labels: "", value: Double(snapshot.probes))]),
            perRole(BusMetricFamilies.redisConnected) { $0.connected ? 1 : 0 },
            perRole(BusMetricFamilies.redisConnections, \.connections),
            perRole(BusMetricFamilies.redisFailedAttempts, \.failedAttempts),
            perRole(BusMetricFamilies.redisDisconnections, \.disconnections),
            perRole(BusMetricFamilies.redisFailedCommands, \.failedCommands),
        ]
        if let process = snapshot.process { families += processFamilies(process) }
        return families
    }
}
