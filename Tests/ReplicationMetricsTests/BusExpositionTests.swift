import ReplicationCore
import ReplicationMetrics
import ReplicationTestSupport
import Testing

@Suite struct BusExpositionTests {
    func render(_ messages: [String]) -> String {
        var observation = BusObservation()
        for message in messages { observation.observe(Array(message.utf8), atMillis: 1_700_000_000_500) }
        let snapshot = BusSnapshot(
            observation: observation, probes: 3,
            redis: [.init(role: "subscriber", connected: true, connections: 2, failedAttempts: 4, disconnections: 1, failedCommands: 0)],
            process: nil)
        return Exposition.render(Exposition.families(snapshot), as: .text)
    }

    @Test func namesPublishersChoseAreEscapedAndPromtoolAcceptsTheResult() throws {
        // Names are whatever a publisher wrote between spaces: quotes, backslashes and newlines included.
        let text = render(["RDATA ev\"nts w\\1 5 []", "POSITION events a\nb 1 2", "USER_SYNC a\nb @u:h None start 1"])
        #expect(text.contains(#"replication_sidecar_bus_stream_position{instance="w\\1",stream_name="ev\"nts"} 5"#))
        #expect(text.contains(#"replication_sidecar_bus_rows_total{instance="a\nb",stream_name="events"} 0"#))
        #expect(text.contains(#"replication_sidecar_bus_syncing_users{instance="a\nb"} 1"#))
        #expect(text.contains(#"replication_sidecar_bus_instance_last_seen_timestamp_seconds{instance="w\\1"} 1700000000.5"#))
        let result = try runProcess("/usr/bin/promtool", ["check", "metrics"], input: text)
        #expect(result.status == 0 && result.errors.isEmpty, "\(result.output)\(result.errors)")
    }

    @Test func knownCommandsAndReasonsStartAtZeroAndTheHistogramIsCumulative() {
        let text = render(["REPLICATE ", "x", String(repeating: "y", count: 300)])
        for command in BusCommandName.allCases {
            let count = command == .REPLICATE ? 1 : 0
            #expect(text.contains("replication_sidecar_bus_commands_total{command=\"\(command.rawValue)\"} \(count)\n"))
        }
        for reason in BusMalformedReason.allCases {
            let count = reason == .unknownCommand ? 2 : 0
            #expect(text.contains("replication_sidecar_bus_malformed_messages_total{reason=\"\(reason.rawValue)\"} \(count)\n"))
        }
        #expect(text.contains("# TYPE replication_sidecar_bus_message_size_bytes histogram\n"))
        #expect(text.contains("replication_sidecar_bus_message_size_bytes_bucket{le=\"64\"} 2\n"))
        #expect(text.contains("replication_sidecar_bus_message_size_bytes_bucket{le=\"256\"} 2\n"))
        #expect(text.contains("replication_sidecar_bus_message_size_bytes_bucket{le=\"512\"} 3\n"))
        #expect(text.contains("replication_sidecar_bus_message_size_bytes_bucket{le=\"+Inf\"} 3\n"))
        #expect(text.contains("replication_sidecar_bus_message_size_bytes_sum 311\n"))
        #expect(text.contains("replication_sidecar_bus_message_size_bytes_count 3\n"))
        #expect(text.contains("replication_sidecar_redis_failed_connection_attempts_total{role=\"subscriber\"} 4\n"))
        #expect(text.contains("replication_sidecar_bus_probes_total 3\n"))
    }
}
