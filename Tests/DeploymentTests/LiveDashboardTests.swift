import Foundation
import MetricsExporter
import ReplicationNIO
import ReplicationTestSupport
import SidecarMetrics
import Synchronization
import Testing

/// The sidecar with a writer and several workers (one slow, one that disconnects), a relay behind it and a
/// sidecar sharing its streams through Redis, a real Prometheus scraping them every second with the project's rules, and every dashboard and rule expression evaluated
/// through Prometheus's HTTP API.
@Suite(.serialized) struct LiveDashboardTests {
    @Test func everyDashboardQueryReturnsDataAndEveryRuleIsValid() async throws {
        let fixture = try await ServerFixture.start(
            ServerConfiguration(serverName: "test.local", writers: ["pub"], socketSendBuffer: 16_384))
        let exporter = MetricsHTTPServer(
            configuration: ExporterConfiguration(host: "127.0.0.1", port: 0), source: HubMetricsSource(server: fixture.server))
        let metricsPort = try exporter.start()
        defer { exporter.stop() }

        // Workers: two that read, one slow one that never reads, one that disconnects.
        var workers: [LineSocket] = []
        for name in ["synapse.app.generic_worker", "synapse.app.generic_worker", "synapse.app.federation_sender"] {
            let worker = try fixture.connect(name: name)
            try worker.send("PING 1\nREPLICATE ALL NOW\nUSER_SYNC @bob:test.local start 1\nFEDERATION_ACK 1\n")
            try worker.send("INVALIDATE_CACHE get_user_by_id [\"@bob:test.local\"]\nREMOVE_PUSHER m.http k @bob:test.local\n")
            try worker.send("USER_IP @bob:test.local [\"t\", \"1.2.3.4\", \"ua\", null, 1]\n")
            workers.append(worker)
        }
        let slow = try fixture.connect(name: "slow", receiveBuffer: 4096)
        try slow.send("REPLICATE events NOW\n")
        let leaving = try fixture.connect(name: "leaving")
        leaving.close()
        let rejected = try fixture.connect(name: "pub")
        try rejected.send("RDATA events 0 [\"bad\"]\n")

        // A writer keeps publishing while Prometheus scrapes; the readers drain their sockets.
        let running = Atomic<Bool>(true)
        let writer = try fixture.connect(name: "pub")
        let readers = workers
        let background = Thread {
            var token = 1
            while running.load(ordering: .relaxed) {
                try? writer.send("RDATA events batch \(eventRow(token))\nRDATA events \(token) \(eventRow(token + 1))\n")
                _ = try? writer.readLine(timeoutMillis: 1_000)
                for worker in readers { _ = try? worker.readLine(timeoutMillis: 1) }
                token += 1
                usleep(20_000)  // a steady trickle of rows, not a load test
            }
        }
        background.start()
        defer { running.store(false, ordering: .relaxed) }

        // A relay behind the hub, with its own endpoint: the relay panels need one. Its workers' commands
        // go upstream, and one asks for rows older than the relay's log.
        let relay = try await RelayFixture.start(upstreamPort: fixture.port, upstreamServerName: "test.local")
        let relayExporter = MetricsHTTPServer(
            configuration: ExporterConfiguration(host: "127.0.0.1", port: 0),
            source: HubMetricsSource(server: relay.server.server, upstream: { relay.link.currentStatus }))
        let relayMetricsPort = try relayExporter.start()
        defer { relayExporter.stop() }
        try await waitUntil { relay.server.log.currentToken(of: .events) > 0 }
        let behindRelay = try relay.connect(name: "synapse.app.generic_worker")
        try behindRelay.send("REPLICATE events 0\nUSER_SYNC @carol:test.local start 1\nFEDERATION_ACK 1\n")
        _ = try behindRelay.readLines { $0.hasPrefix("POSITION events ") }
        #expect(relay.link.currentStatus.backfills == 1)

        // A sidecar sharing its streams through a real Redis, with a writer's rows on it: the Redis row of
        // the dashboard and its alerts need one.
        let redis = try RedisServer()
        let shared = try SidecarProcess(serve: ["--redis", redis.url, "--server-name", "test.local", "--writer", "pub", "--in-memory"])
        defer { shared.kill() }
        let sharedWriter = try LineSocket(port: shared.port)
        try sharedWriter.send("NAME pub\nRDATA events 1 \(eventRow(1))\n")
        _ = try sharedWriter.readLines { $0 == "POSITION events 1" }

        let prometheus = try PrometheusProcess(scraping: [metricsPort, relayMetricsPort, shared.metricsPort])
        defer { prometheus.stop() }

        let dashboard = try Dashboard.load()
        var missing: [String] = []
        // A wait that runs out still reports which queries had no data.
        try? await waitUntil(seconds: 90) {
            missing = dashboard.panels.flatMap { panel in
                panel.expressions.compactMap { expression in
                    (try? prometheus.query(Dashboard.resolve(expression)).hasData) == true ? nil : "\(panel.title): \(expression)"
                }
            }
            return missing.isEmpty
        }
        #expect(missing.isEmpty, "queries without data: \(missing)")

        // Every rule watches series that exist on a hub, a relay and a Redis-backed sidecar: recording rules return data, and so does
        // every alert's expression without its threshold (absent() aside, which has data only when its
        // target is gone).
        let rules = try PrometheusRules.load()
        #expect(rules.recordings.count >= 4 && rules.alerts.count >= 10)
        var silent: [String] = []
        try? await waitUntil(seconds: 60) {
            silent = rules.recordings.map(\.expression).filter { (try? prometheus.query($0).hasData) != true }
            return silent.isEmpty
        }
        #expect(silent.isEmpty, "recording rules without data: \(silent)")
        for alert in rules.alerts {
            #expect(try prometheus.query(alert.expression).succeeded, "invalid alert expression: \(alert.expression)")
            guard !alert.expression.hasPrefix("absent(") else { continue }
            let watched = alert.expression.replacing(#/\s*(==|!=|>=|<=|>|<)\s*[0-9.]+$/#, with: "")
            #expect(watched != alert.expression, "\(alert.name) has no threshold to strip")
            #expect(try prometheus.query(watched).hasData, "\(alert.name) watches no series: \(watched)")
        }
        running.store(false, ordering: .relaxed)
        background.cancel()
        try await relay.stop()
        try await fixture.stop()
    }
}

/// Debian's Prometheus on a free loopback port, scraping its targets every second, with the project's rules.
final class PrometheusProcess {
    let port: Int
    private let process = Process()
    private let directory: URL

    struct Answer {
        var succeeded: Bool
        var hasData: Bool
    }

    init(scraping targets: [Int]) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("prometheus-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            at: repositoryRoot.appendingPathComponent("deploy/prometheus/rules.yml"),
            to: directory.appendingPathComponent("rules.yml"))
        try """
        global: {scrape_interval: 1s, evaluation_interval: 1s}
        rule_files: [rules.yml]
        scrape_configs:
          - job_name: replication-sidecar
            static_configs: [{targets: [\(targets.map { "'127.0.0.1:\($0)'" }.joined(separator: ", "))]}]
        """.write(to: directory.appendingPathComponent("prometheus.yml"), atomically: true, encoding: .utf8)
        port = try freePort()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/prometheus")
        process.arguments = [
            "--config.file=\(directory.appendingPathComponent("prometheus.yml").path)",
            "--storage.tsdb.path=\(directory.appendingPathComponent("data").path)",
            "--web.listen-address=127.0.0.1:\(port)",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    func query(_ expression: String) throws -> Answer {
        let result = try runProcess(
            "/usr/bin/curl",
            ["-s", "--get", "--data-urlencode", "query=\(expression)", "http://127.0.0.1:\(port)/api/v1/query"])
        let json = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
        let data = json?["data"] as? [String: Any]
        let values = data?["result"] as? [Any] ?? []
        return Answer(succeeded: json?["status"] as? String == "success", hasData: !values.isEmpty)
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }
}
