import ReplicationCore

/// One family with its samples, ready to render.
public struct FamilySamples: Sendable, Equatable {
    public struct Sample: Sendable, Equatable {
        public var labels: [(name: String, value: String)]
        public var value: Double

        public static func == (lhs: Sample, rhs: Sample) -> Bool {
            lhs.value == rhs.value && lhs.labels.elementsEqual(rhs.labels) { $0 == $1 }
        }
    }

    public var family: MetricFamily
    public var samples: [Sample]
}

/// The two exposition formats Prometheus scrapes.
public enum ExpositionFormat: Sendable {
    /// Prometheus text format 0.0.4.
    case text
    /// OpenMetrics 1.0.0.
    case openMetrics

    public var contentType: String {
        switch self {
        case .text: "text/plain; version=0.0.4; charset=utf-8"
        case .openMetrics: "application/openmetrics-text; version=1.0.0; charset=utf-8"
        }
    }
}

/// Turns a snapshot into metric families, and families into exposition text.
///
/// Written here rather than with swift-prometheus: values are computed at scrape time from snapshots
/// (that library keeps long-lived metric objects), series must vanish with their connection and come
/// out in a stable order, and a name registered twice must not crash the process.
public enum Exposition {
    public static func families(_ snapshot: MetricsSnapshot) -> [FamilySamples] {
        let byName = Dictionary(grouping: snapshot.connections, by: \.name).sorted { $0.key < $1.key }
        func perName(_ family: MetricFamily, _ value: ([ConnectionSnapshot]) -> Double) -> FamilySamples {
            FamilySamples(
                family: family,
                samples: byName.map { .init(labels: [("name", $0.key)], value: value($0.value)) })
        }
        func perCommand(_ family: MetricFamily, _ count: (CommandCounters, CommandName) -> Int) -> FamilySamples {
            var samples: [FamilySamples.Sample] = []
            for (name, connections) in byName {
                for command in CommandName.allCases {
                    let total = connections.reduce(0) { $0 + count($1.counters, command) }
                    if total > 0 {
                        samples.append(.init(labels: [("command", command.rawValue), ("name", name)], value: Double(total)))
                    }
                }
            }
            return FamilySamples(family: family, samples: samples)
        }
        func single(_ family: MetricFamily, _ value: Double) -> FamilySamples {
            FamilySamples(family: family, samples: [.init(labels: [], value: value)])
        }
        func perStream(_ family: MetricFamily, _ value: (StreamName) -> Double) -> FamilySamples {
            FamilySamples(
                family: family,
                samples: StreamName.all.map { .init(labels: [("stream_name", $0.rawValue)], value: value($0)) })
        }
        /// Per (name, stream) for the streams a connection of that name subscribes to.
        func perNameAndStream(_ family: MetricFamily, _ value: ([Int64], StreamName) -> Double) -> FamilySamples {
            var samples: [FamilySamples.Sample] = []
            for (name, connections) in byName {
                for stream in StreamName.all {
                    let tokens = connections.compactMap { $0.sentTokens[stream.index] }
                    if !tokens.isEmpty {
                        samples.append(
                            .init(labels: [("name", name), ("stream_name", stream.rawValue)], value: value(tokens, stream)))
                    }
                }
            }
            return FamilySamples(family: family, samples: samples)
        }

        let counters = snapshot.counters
        var families: [FamilySamples] = [
            perName(MetricFamilies.pendingCommands) { Double($0.reduce(0) { $0 + $1.pendingCommands }) },
            perName(MetricFamilies.transportSendBuffer) { Double($0.reduce(0) { $0 + $1.bufferedWritableBytes }) },
            perName(MetricFamilies.kernelSendBuffer) { Double($0.reduce(0) { $0 + $1.kernelSendQueue }) },
            perName(MetricFamilies.kernelReadBuffer) { Double($0.reduce(0) { $0 + $1.kernelReceiveQueue }) },
            perCommand(MetricFamilies.inboundCommands) { $0.inbound($1) },
            perCommand(MetricFamilies.outboundCommands) { $0.outbound($1) },
            FamilySamples(
                family: MetricFamilies.closeReason,
                samples: CloseReason.allCases.compactMap { reason in
                    counters.closeReasons[reason].map { .init(labels: [("reason_type", reason.rawValue)], value: Double($0)) }
                }),
            perStream(MetricFamilies.streamUpdates) { Double(counters.streamUpdates[$0.index]) },
            single(MetricFamilies.userSync, Double(counters.userSync)),
            single(MetricFamilies.federationAck, Double(counters.federationAck)),
            single(MetricFamilies.removePusher, Double(counters.removePusher)),
            single(MetricFamilies.invalidateCache, Double(counters.invalidateCache)),
            single(MetricFamilies.userIPCache, Double(counters.userIP)),
            single(MetricFamilies.totalConnections, Double(snapshot.connections.count)),
            perStream(MetricFamilies.connectionsPerStream) { stream in
                Double(snapshot.connections.filter { $0.sentTokens[stream.index] != nil }.count)
            },
            perStream(MetricFamilies.streamHeadToken) { Double(snapshot.headTokens[$0.index]) },
            perNameAndStream(MetricFamilies.sentToken) { tokens, _ in Double(tokens.min()!) },
            perNameAndStream(MetricFamilies.lagTokens) { tokens, stream in
                Double(max(0, snapshot.headTokens[stream.index] - tokens.min()!))
            },
            perName(MetricFamilies.syncingUsers) { Double($0.reduce(0) { $0 + $1.syncingUsers }) },
            perName(MetricFamilies.connectionAge) { connections in
                Double(snapshot.nowMillis - connections.map(\.connectedAtMillis).min()!) / 1000
            },
            single(MetricFamilies.writerAppends, Double(counters.writerAppends)),
            single(MetricFamilies.writerRejections, Double(counters.writerRejections)),
            single(MetricFamilies.scrapeDuration, snapshot.scrapes.lastDurationSeconds),
            single(MetricFamilies.scrapeErrors, Double(snapshot.scrapes.errors)),
        ]
        if let ack = counters.lastFederationAck { families.append(single(MetricFamilies.lastFederationAck, Double(ack))) }
        if let process = snapshot.process {
            families += [
                single(MetricFamilies.processCPU, process.cpuSeconds),
                single(MetricFamilies.processResident, process.residentBytes),
                single(MetricFamilies.processVirtual, process.virtualBytes),
                single(MetricFamilies.processOpenFDs, process.openFDs),
                single(MetricFamilies.processMaxFDs, process.maxFDs),
                single(MetricFamilies.processStart, process.startTimeSeconds),
            ]
        }
        return families
    }

    public static func render(_ families: [FamilySamples], as format: ExpositionFormat) -> String {
        var out = ""
        out.reserveCapacity(families.reduce(0) { $0 + 120 + $1.samples.count * 100 })
        for entry in families {
            let family = entry.family
            // Text format 0.0.4 names the family as its samples are named; OpenMetrics without `_total`.
            let familyName = format == .text ? family.sampleName : family.name
            out += "# HELP \(familyName) \(escape(family.help, quotes: false))\n"
            out += "# TYPE \(familyName) \(family.kind.rawValue)\n"
            for sample in entry.samples {
                out += family.sampleName
                if !sample.labels.isEmpty {
                    out += "{"
                    out += sample.labels.map { "\($0.name)=\"\(escape($0.value, quotes: true))\"" }.joined(separator: ",")
                    out += "}"
                }
                out += " \(formatValue(sample.value))\n"
            }
        }
        if format == .openMetrics { out += "# EOF\n" }
        return out
    }

    /// Backslash and newline are escaped in help texts; label values escape double quotes too.
    static func escape(_ text: String, quotes: Bool) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\"" where quotes: escaped += "\\\""
            default: escaped.append(character)
            }
        }
        return escaped
    }

    static func formatValue(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }
}
