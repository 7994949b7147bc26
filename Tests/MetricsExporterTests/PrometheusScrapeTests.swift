import Foundation
import MetricsExporter
import ReplicationNIO
import ReplicationTestSupport
import SidecarMetrics
import Testing

/// Debian's Prometheus, started by the test on 127.0.0.1, scraping the sidecar every second.
@Suite struct PrometheusScrapeTests {
    @Test func aRealPrometheusSeesTheConnectedWorker() async throws {
        let fixture = try await ServerFixture.start(ServerConfiguration(serverName: "test.local"))
        let exporter = MetricsHTTPServer(
            configuration: ExporterConfiguration(host: "127.0.0.1", port: 0),
            source: HubMetricsSource(server: fixture.server))
        let metricsPort = try exporter.start()
        defer { exporter.stop() }
        let worker = try fixture.connect(name: "worker")
        try worker.send("REPLICATE events NOW\n")
        #expect(try worker.readLine() == "POSITION events 0")

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("prometheus-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("prometheus.yml")
        try """
        global: {scrape_interval: 1s, evaluation_interval: 1s}
        scrape_configs:
          - job_name: replication-sidecar
            static_configs: [{targets: ['127.0.0.1:\(metricsPort)']}]
        """.write(to: config, atomically: true, encoding: .utf8)
        let prometheusPort = try freePort()
        let prometheus = Process()
        prometheus.executableURL = URL(fileURLWithPath: "/usr/bin/prometheus")
        prometheus.arguments = [
            "--config.file=\(config.path)", "--storage.tsdb.path=\(directory.appendingPathComponent("data").path)",
            "--web.listen-address=127.0.0.1:\(prometheusPort)",
        ]
        prometheus.standardOutput = FileHandle.nullDevice
        prometheus.standardError = FileHandle.nullDevice
        try prometheus.run()
        defer {
            prometheus.terminate()
            prometheus.waitUntilExit()
        }

        // Prometheus needs several seconds for its first scrape: wait for the series, with a deadline.
        let query = #"synapse_replication_tcp_protocol_inbound_commands{command="REPLICATE",name="worker"}"#
        var answer = ""
        try waitUntilTrue(seconds: 60) {
            let result = try? runProcess(
                "/usr/bin/curl",
                ["-s", "--get", "--data-urlencode", "query=\(query)", "http://127.0.0.1:\(prometheusPort)/api/v1/query"])
            answer = result?.output ?? ""
            return answer.contains(#""name":"worker""#)
        }
        #expect(answer.contains(#""status":"success""#))
        #expect(answer.contains(#""job":"replication-sidecar""#))
        #expect(answer.contains(#","1"]"#))  // one REPLICATE received
        try await fixture.stop()
    }
}
