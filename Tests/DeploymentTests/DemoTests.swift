import Foundation
import ReplicationTestSupport
import Testing

/// `replication-sidecar demo`: /metrics shows a writer, workers and a slow worker within seconds.
@Suite struct DemoTests {
    @Test func theDemoShowsLifeWithinSeconds() throws {
        let port = try freePort()
        let metricsPort = try freePort()
        let demo = Process()
        demo.executableURL = sidecarExecutable
        demo.arguments = ["demo", "--port", "\(port)", "--metrics-port", "\(metricsPort)"]
        demo.standardOutput = FileHandle.nullDevice
        demo.standardError = FileHandle.nullDevice
        try demo.run()
        defer {
            demo.terminate()
            demo.waitUntilExit()
        }
        var metrics = ""
        try waitUntilTrue(seconds: 30) {
            metrics = (try? runProcess("/usr/bin/curl", ["-s", "http://127.0.0.1:\(metricsPort)/metrics"]).output) ?? ""
            let lag = metrics.split(separator: "\n").first {
                $0.hasPrefix(#"replication_sidecar_connection_lag_tokens{name="synapse.app.slow_worker",stream_name="events"}"#)
            }
            return (lag.flatMap { Double($0.split(separator: " ").last!) } ?? 0) > 0
        }
        for name in ["demo-writer", "synapse.app.generic_worker", "synapse.app.federation_sender", "synapse.app.flaky_worker"] {
            #expect(metrics.contains(#"name="\#(name)""#), "no series for \(name)")
        }
        #expect(metrics.contains(#"synapse_replication_tcp_protocol_outbound_commands{command="RDATA",name="synapse.app.generic_worker"}"#))
        #expect(metrics.contains("\nreplication_sidecar_writer_rejections_total 0\n"), "the demo writer's rows must all be accepted")
    }
}
