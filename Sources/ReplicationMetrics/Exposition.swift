import ReplicationCore

/// One family with its samples, ready to render.
public struct FamilySamples: Sendable, Equatable {
    public struct Sample: Sendable, Equatable {
        /// The label pairs as they appear between the braces, already escaped (empty for none).
        public var labels: String
        public var value: Double
        /// A histogram's `_bucket`, `_sum` or `_count`; empty for other kinds.
        public var suffix: String = ""
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
        let totals = snapshot.connections
        let names = totals.byName.keys.sorted().map { ($0, "name=\"\(escape($0, quotes: true))\"", totals.byName[$0]!) }
        let streamLabels = StreamName.all.map { "stream_name=\"\($0.rawValue)\"" }

        func perName(_ family: MetricFamily, _ value: (ConnectionTotals.PerName) -> Double) -> FamilySamples {
            FamilySamples(family: family, samples: names.map { .init(labels: $0.1, value: value($0.2)) })
        }
        func perCommand(_ family: MetricFamily, _ counts: (ConnectionTotals.PerName) -> [Int]) -> FamilySamples {
            perCommand(family, names.map { ($0.1, counts($0.2)) })
        }
        /// Counted since start, per name: closed connections' names too.
        func perCommandSinceStart(_ family: MetricFamily, _ counts: (CommandCounters) -> [Int]) -> FamilySamples {
            perCommand(
                family,
                totals.commandsByName.keys.sorted().map {
                    ("name=\"\(escape($0, quotes: true))\"", counts(totals.commandsByName[$0]!))
                })
        }
        func perCommand(_ family: MetricFamily, _ labelledCounts: [(String, [Int])]) -> FamilySamples {
            var samples: [FamilySamples.Sample] = []
            for (label, counts) in labelledCounts {
                for (command, count) in zip(CommandName.allCases, counts) where count > 0 {
                    samples.append(.init(labels: "command=\"\(command.rawValue)\",\(label)", value: Double(count)))
                }
            }
            return FamilySamples(family: family, samples: samples)
        }
        func single(_ family: MetricFamily, _ value: Double) -> FamilySamples {
            FamilySamples(family: family, samples: [.init(labels: "", value: value)])
        }
        func perStream(_ family: MetricFamily, _ value: (StreamName) -> Double) -> FamilySamples {
            FamilySamples(
                family: family, samples: StreamName.all.map { .init(labels: streamLabels[$0.index], value: value($0)) })
        }
        /// Per (name, stream), for the streams some connection of that name subscribes to.
        func perNameAndStream(_ family: MetricFamily, _ value: (Int64, StreamName) -> Double) -> FamilySamples {
            var samples: [FamilySamples.Sample] = []
            for (_, label, aggregate) in names {
                for stream in StreamName.all {
                    guard let lowest = aggregate.lowestSentTokens[stream.index] else { continue }
                    samples.append(.init(labels: "\(label),\(streamLabels[stream.index])", value: value(lowest, stream)))
                }
            }
            return FamilySamples(family: family, samples: samples)
        }

        let counters = snapshot.counters
        var families: [FamilySamples] = [
            perName(MetricFamilies.pendingCommands) { Double($0.pendingCommands) },
            perName(MetricFamilies.transportSendBuffer) { Double($0.bufferedWritableBytes) },
            perName(MetricFamilies.kernelSendBuffer) { Double($0.kernelSendQueue) },
            perName(MetricFamilies.kernelReadBuffer) { Double($0.kernelReceiveQueue) },
            perCommand(MetricFamilies.inboundCommands) { $0.inbound },
            perCommand(MetricFamilies.outboundCommands) { $0.outbound },
            perCommandSinceStart(MetricFamilies.inboundCommandsTotal) { $0.inbound },
            perCommandSinceStart(MetricFamilies.outboundCommandsTotal) { $0.outbound },
            // Every reason from the start, at 0 until it happens: increase() then sees its first close.
            FamilySamples(
                family: MetricFamilies.closeReason,
                samples: CloseReason.allCases.map { reason in
                    .init(labels: "reason_type=\"\(reason.rawValue)\"", value: Double(counters.closeReasons[reason] ?? 0))
                }),
            perStream(MetricFamilies.streamUpdates) { Double(counters.streamUpdates[$0.index]) },
            single(MetricFamilies.userSync, Double(counters.userSync)),
            single(MetricFamilies.federationAck, Double(counters.federationAck)),
            single(MetricFamilies.removePusher, Double(counters.removePusher)),
            single(MetricFamilies.invalidateCache, Double(counters.invalidateCache)),
            single(MetricFamilies.userIPCache, Double(counters.userIP)),
            single(MetricFamilies.totalConnections, Double(totals.connectionCount)),
            perStream(MetricFamilies.connectionsPerStream) { Double(totals.subscribers[$0.index]) },
            perStream(MetricFamilies.streamHeadToken) { Double(snapshot.headTokens[$0.index]) },
            perNameAndStream(MetricFamilies.sentToken) { lowest, _ in Double(lowest) },
            perNameAndStream(MetricFamilies.lagTokens) { lowest, stream in
                Double(max(0, snapshot.headTokens[stream.index] - lowest))
            },
            perName(MetricFamilies.syncingUsers) { Double($0.syncingUsers) },
            perName(MetricFamilies.connectionStartTime) { Double($0.oldestConnectedAtMillis) / 1000 },
            single(MetricFamilies.writerAppends, Double(counters.writerAppends)),
            single(MetricFamilies.writerRejections, Double(counters.writerRejections)),
            single(MetricFamilies.writerResentBatches, Double(counters.writerResentBatches)),
            single(MetricFamilies.storageReadErrors, Double(counters.storageReadErrors)),
            single(MetricFamilies.scrapeDuration, snapshot.scrapes.lastDurationSeconds),
            single(MetricFamilies.scrapeErrors, Double(snapshot.scrapes.errors)),
            single(MetricFamilies.slowHTTPClientsClosed, Double(snapshot.scrapes.slowClientsClosed)),
        ]
        if let ack = counters.lastFederationAck { families.append(single(MetricFamilies.lastFederationAck, Double(ack))) }
        if let upstream = snapshot.upstream {
            var received: [FamilySamples.Sample] = []
            var lag: [FamilySamples.Sample] = []
            for stream in StreamName.all {
                guard let token = upstream.receivedTokens[stream.index] else { continue }
                received.append(.init(labels: streamLabels[stream.index], value: Double(token)))
                lag.append(.init(labels: streamLabels[stream.index], value: Double(max(0, token - snapshot.headTokens[stream.index]))))
            }
            families += [
                single(MetricFamilies.upstreamConnected, upstream.connected ? 1 : 0),
                single(MetricFamilies.upstreamReconnects, Double(upstream.reconnects)),
                FamilySamples(family: MetricFamilies.upstreamReceivedToken, samples: received),
                FamilySamples(family: MetricFamilies.upstreamLagTokens, samples: lag),
                perStream(MetricFamilies.inboundRDATA) { Double(upstream.receivedRows[$0.index]) },
                FamilySamples(
                    family: MetricFamilies.upstreamForwarded,
                    samples: CommandName.forwardedUpstream.map { command in
                        .init(labels: "command=\"\(command.rawValue)\"", value: Double(upstream.forwarded[command.index]))
                    }),
                single(MetricFamilies.upstreamQueued, Double(upstream.queuedCommands)),
                single(MetricFamilies.upstreamDropped, Double(upstream.droppedCommands)),
                FamilySamples(
                    family: MetricFamilies.upstreamBackfills,
                    samples: [
                        .init(labels: "result=\"ok\"", value: Double(upstream.backfills)),
                        .init(labels: "result=\"failed\"", value: Double(upstream.failedBackfills)),
                    ]),
            ]
        }
        families.append(
            FamilySamples(
                family: MetricFamilies.buildInfo,
                samples: [
                    .init(
                        labels:
                            "revision=\"\(escape(snapshot.revision, quotes: true))\",version=\"\(escape(snapshot.version, quotes: true))\"",
                        value: 1)
                ]))
        if let process = snapshot.process { families += processFamilies(process) }
        return families
    }

    /// The standard `process_*` families.
    static func processFamilies(_ process: ProcessStatistics) -> [FamilySamples] {
        [
            (MetricFamilies.processCPU, process.cpuSeconds), (MetricFamilies.processResident, process.residentBytes),
            (MetricFamilies.processVirtual, process.virtualBytes), (MetricFamilies.processOpenFDs, process.openFDs),
            (MetricFamilies.processMaxFDs, process.maxFDs), (MetricFamilies.processStart, process.startTimeSeconds),
        ].map { FamilySamples(family: $0, samples: [.init(labels: "", value: $1)]) }
    }

    public static func render(_ families: [FamilySamples], as format: ExpositionFormat) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(families.reduce(256) { $0 + 160 + $1.samples.count * 96 })
        for entry in families {
            let family = entry.family
            // Text format 0.0.4 names the family as its samples are named; OpenMetrics without `_total`.
            let familyName = format == .text ? family.sampleName : family.name
            out += "# HELP ".utf8
            out += familyName.utf8
            out.append(UInt8(ascii: " "))
            out += escape(family.help, quotes: false).utf8
            out += "\n# TYPE ".utf8
            out += familyName.utf8
            out.append(UInt8(ascii: " "))
            out += family.kind.rawValue.utf8
            out.append(UInt8(ascii: "\n"))
            let sampleName = family.sampleName
            for sample in entry.samples {
                out += sampleName.utf8
                out += sample.suffix.utf8
                if !sample.labels.isEmpty {
                    out.append(UInt8(ascii: "{"))
                    out += sample.labels.utf8
                    out.append(UInt8(ascii: "}"))
                }
                out.append(UInt8(ascii: " "))
                appendValue(sample.value, to: &out)
                out.append(UInt8(ascii: "\n"))
            }
        }
        if format == .openMetrics { out += "# EOF\n".utf8 }
        return String(decoding: out, as: UTF8.self)
    }

    /// Integers without a fraction (the common case, written digit by digit), other values as Swift prints them.
    static func appendValue(_ value: Double, to out: inout [UInt8]) {
        guard value == value.rounded(), abs(value) < 1e15 else {
            out += formatValue(value).utf8
            return
        }
        var integer = Int64(value)
        if integer < 0 {
            out.append(UInt8(ascii: "-"))
            integer = -integer
        }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        withUnsafeMutableBytes(of: &digits) { buffer in
            repeat {
                buffer[15 - count] = UInt8(ascii: "0") + UInt8(integer % 10)
                integer /= 10
                count += 1
            } while integer > 0
            out += buffer[(16 - count)...]
        }
    }

    /// Backslash and newline are escaped in help texts; label values escape double quotes too.
    public static func escape(_ text: String, quotes: Bool) -> String {
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
