import Foundation
import ReplicationCore
import ReplicationTestSupport
import Testing

@testable import ReplicationMetrics

/// A fixed scene: two connections named `synapse.app.generic_worker` (summed), one writer with a name that
/// needs escaping, and some server-wide counts.
func fixedSnapshot() -> MetricsSnapshot {
    func counters(_ inbound: [CommandName: Int], _ outbound: [CommandName: Int]) -> CommandCounters {
        var counters = CommandCounters()
        for (name, count) in inbound { for _ in 0..<count { counters.countInbound(name) } }
        for (name, count) in outbound { counters.countOutbound(name, by: count) }
        return counters
    }
    var tokens = [Int64?](repeating: nil, count: StreamName.all.count)
    tokens[StreamName.events.index] = 10
    tokens[StreamName.caches.index] = 4
    var laggingTokens = tokens
    laggingTokens[StreamName.events.index] = 7
    let worker1 = ConnectionSnapshot(
        name: "synapse.app.generic_worker", peer: "127.0.0.1:1", isWriter: false, connectedAtMillis: 1_000,
        pendingCommands: 2, bufferedWritableBytes: 66_560, kernelSendQueue: 1_000, kernelReceiveQueue: 0,
        counters: counters([.NAME: 1, .PING: 1, .REPLICATE: 2], [.SERVER: 1, .PING: 1, .RDATA: 18, .POSITION: 2]),
        sentTokens: tokens, syncingUsers: 1)
    let worker2 = ConnectionSnapshot(
        name: "synapse.app.generic_worker", peer: "127.0.0.1:2", isWriter: false, connectedAtMillis: 3_000,
        pendingCommands: 1, bufferedWritableBytes: 0, kernelSendQueue: 24, kernelReceiveQueue: 5,
        counters: counters([.NAME: 1, .REPLICATE: 1], [.SERVER: 1, .RDATA: 2]), sentTokens: laggingTokens,
        syncingUsers: 0)
    let writer = ConnectionSnapshot(
        name: #"pub "one"\n"#, peer: "127.0.0.1:3", isWriter: true, connectedAtMillis: 5_000, pendingCommands: 0,
        bufferedWritableBytes: 0, counters: counters([.NAME: 1, .RDATA: 3], [.POSITION: 1]),
        sentTokens: [Int64?](repeating: nil, count: StreamName.all.count), syncingUsers: 0)
    var hub = HubCounters()
    hub.streamUpdates[StreamName.events.index] = 12
    hub.streamUpdates[StreamName.caches.index] = 6
    hub.userSync = 2
    hub.federationAck = 1
    hub.lastFederationAck = 17
    hub.invalidateCache = 1
    hub.closeReasons = [.connectionDone: 3, .pingTimeout: 1]
    hub.writerAppends = 5
    hub.writerRejections = 1
    hub.storageReadErrors = 2
    var heads = [Int64](repeating: 0, count: StreamName.all.count)
    heads[StreamName.events.index] = 10
    heads[StreamName.caches.index] = 4
    // As a relay: received up to 12 on events, stored up to 10.
    var upstream = UpstreamStatus()
    upstream.connected = true
    upstream.reconnects = 2
    upstream.receivedTokens[StreamName.events.index] = 12
    upstream.receivedTokens[StreamName.caches.index] = 4
    upstream.forwarded[CommandName.USER_SYNC.index] = 2
    upstream.receivedRows[StreamName.events.index] = 12
    upstream.queuedCommands = 1
    upstream.backfills = 3
    var connections = ConnectionTotals([worker1, worker2, writer])
    // A worker that has gone: only its command counters remain.
    connections.addClosed(name: "gone", counters: counters([.NAME: 1, .REPLICATE: 1], [.SERVER: 1, .RDATA: 4]))
    var snapshot = MetricsSnapshot(
        connections: connections, counters: hub, headTokens: heads,
        process: ProcessStatistics(
            cpuSeconds: 1.5, residentBytes: 1_048_576, virtualBytes: 2_097_152, openFDs: 12, maxFDs: 1024,
            startTimeSeconds: 1_700_000_000),
        scrapes: ScrapeStatistics(lastDurationSeconds: 0.25, errors: 0, slowClientsClosed: 3), upstream: upstream)
    snapshot.version = "1.2.3"
    snapshot.revision = "0123456789ab"
    return snapshot
}

/// The golden file's text; with `RECORD_GOLDEN=1` in the environment, `actual` is written there first
/// (review the diff before committing it).
func golden(_ name: String, actual: String) throws -> String {
    let url = repositoryRoot.appendingPathComponent("Tests/ReplicationMetricsTests/Golden/\(name)")
    if ProcessInfo.processInfo.environment["RECORD_GOLDEN"] == "1" { try actual.write(to: url, atomically: true, encoding: .utf8) }
    return try String(contentsOf: url, encoding: .utf8)
}

@Suite struct ExpositionTests {
    let families = Exposition.families(fixedSnapshot())

    @Test func textFormatMatchesTheGoldenFile() throws {
        let text = Exposition.render(families, as: .text)
        #expect(text == (try golden("text.txt", actual: text)))
    }

    @Test func openMetricsMatchesTheGoldenFile() throws {
        let text = Exposition.render(families, as: .openMetrics)
        #expect(text == (try golden("openmetrics.txt", actual: text)))
    }

    @Test func connectionsSharingANameAreSummed() {
        let pending = families.first { $0.family == MetricFamilies.pendingCommands }!
        #expect(pending.samples.first { $0.labels == #"name="synapse.app.generic_worker""# }?.value == 3)
        let lag = families.first { $0.family == MetricFamilies.lagTokens }!
        // The most lagging connection of a name is what its lag shows.
        #expect(
            lag.samples.first { $0.labels == #"name="synapse.app.generic_worker",stream_name="events""# }?.value == 3)
    }

    @Test func knownLabelValuesAreExportedBeforeTheyHappen() {
        let text = Exposition.render(families, as: .text)
        for reason in CloseReason.allCases where reason != .connectionDone && reason != .pingTimeout {
            #expect(text.contains("synapse_replication_tcp_protocol_close_reason_total{reason_type=\"\(reason.rawValue)\"} 0\n"))
        }
        for command in CommandName.forwardedUpstream where command != .USER_SYNC {
            #expect(text.contains("replication_sidecar_upstream_forwarded_commands_total{command=\"\(command.rawValue)\"} 0\n"))
        }
        for stream in StreamName.all where stream != .events {
            #expect(text.contains("synapse_replication_tcp_protocol_inbound_rdata_count_total{stream_name=\"\(stream.rawValue)\"} 0\n"))
        }
        #expect(text.contains("synapse_replication_tcp_protocol_inbound_rdata_count_total{stream_name=\"events\"} 12\n"))
    }

    @Test func sharedStreamsErrorsRefusalsAndBackfillsAreExportedBeforeTheyHappen() {
        let empty = [Int](repeating: 0, count: StreamName.all.count)
        let tokens = [Int64](repeating: 0, count: StreamName.all.count)
        let figures = SharedStreamsFigures(
            links: [], commandCounts: [], commandSecondsSum: 0, entriesWritten: empty, entriesRead: empty,
            redisTokens: tokens, localTokens: tokens, diverged: [], errors: ["read": 2], refusedWrites: [:],
            entriesTrimmed: empty, backfills: ["ok": 3], abortedTransactions: 4)
        let text = Exposition.render(Exposition.families(figures), as: .text)
        #expect(text.contains("replication_sidecar_redis_streams_aborted_transactions_total 4\n"))
        for kind in ["entry", "store", "script"] {
            #expect(text.contains("replication_sidecar_redis_streams_errors_total{kind=\"\(kind)\"} 0\n"))
        }
        #expect(text.contains("replication_sidecar_redis_streams_errors_total{kind=\"read\"} 2\n"))
        for reason in ["token_taken", "unavailable", "diverged", "not_replicated", "failed"] {
            #expect(text.contains("replication_sidecar_redis_streams_refused_writes_total{reason=\"\(reason)\"} 0\n"))
        }
        #expect(text.contains("replication_sidecar_redis_streams_backfills_total{result=\"ok\"} 3\n"))
        for result in ["fallen_behind", "failed"] {
            #expect(text.contains("replication_sidecar_redis_streams_backfills_total{result=\"\(result)\"} 0\n"))
        }
    }

    @Test func commandCountersKeepClosedConnectionsAndStartTimesAreTimestamps() {
        let text = Exposition.render(families, as: .text)
        #expect(text.contains(#"replication_sidecar_outbound_commands_total{command="RDATA",name="gone"} 4"#))
        #expect(!text.contains(#"synapse_replication_tcp_protocol_outbound_commands{command="RDATA",name="gone"}"#))
        #expect(text.contains(#"replication_sidecar_outbound_commands_total{command="RDATA",name="synapse.app.generic_worker"} 20"#))
        // The oldest connection of the name opened at 1,000 ms after the epoch.
        #expect(text.contains(#"replication_sidecar_connection_start_time_seconds{name="synapse.app.generic_worker"} 1"# + "\n"))
        #expect(!text.contains("connection_age_seconds"))
        #expect(text.contains(#"replication_sidecar_build_info{revision="0123456789ab",version="1.2.3"} 1"# + "\n"))
    }

    @Test func closedConnectionsLeaveNoSeries() {
        var snapshot = fixedSnapshot()
        snapshot.connections = ConnectionTotals()
        let text = Exposition.render(Exposition.families(snapshot), as: .text)
        #expect(!text.contains("{name=") && !text.contains(",name="))  // nothing counted: no command counters either
        #expect(text.contains("synapse_replication_tcp_resource_total_connections 0\n"))
    }

    @Test func promtoolAcceptsTheTextFormat() throws {
        let result = try runProcess("/usr/bin/promtool", ["check", "metrics"], input: Exposition.render(families, as: .text))
        #expect(result.status == 0, "\(result.output)\(result.errors)")
    }

    @Test(arguments: [ExpositionFormat.text, .openMetrics])
    func thePythonClientParsesBothFormats(format: ExpositionFormat) throws {
        let parser =
            format == .text
            ? "from prometheus_client.parser import text_string_to_metric_families as parse"
            : "from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse"
        let script = """
            import sys
            \(parser)
            for family in parse(sys.stdin.read()):
                for sample in family.samples:
                    print(family.type, sample.name, sorted(sample.labels.items()), float(sample.value))
            """
        let result = try runProcess(projectPython, ["-c", script], input: Exposition.render(families, as: format))
        #expect(result.status == 0, "\(result.errors)")
        let lines = result.output.split(separator: "\n")
        #expect(
            lines.contains(
                #"gauge synapse_replication_tcp_protocol_pending_commands [('name', 'pub "one"\\n')] 0.0"#))
        #expect(
            lines.contains(
                "counter synapse_replication_tcp_protocol_close_reason_total [('reason_type', 'ping_timeout')] 1.0"))
        #expect(lines.count == families.reduce(0) { $0 + $1.samples.count })
    }
}
