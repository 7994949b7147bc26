import Foundation
import ReplicationMetrics
import ReplicationTestSupport
import Testing

/// The files in `deploy/` and `dashboards/`, checked with the tools that would consume them.
@Suite struct DeploymentFilesTests {
    func path(_ relative: String) -> String { repositoryRoot.appendingPathComponent(relative).path }

    @Test func prometheusRulesConfigAndRuleUnitTests() throws {
        for arguments in [
            ["check", "rules", path("deploy/prometheus/rules.yml")],
            ["test", "rules", path("deploy/prometheus/rules_test.yml")],
            ["check", "config", path("deploy/prometheus/prometheus.yml")],
        ] {
            let result = try runProcess("/usr/bin/promtool", arguments)
            #expect(result.status == 0, "promtool \(arguments): \(result.output)\(result.errors)")
        }
    }

    @Test func everyAlertHasARunbookAndAUnitTest() throws {
        let rules = try String(contentsOfFile: path("deploy/prometheus/rules.yml"), encoding: .utf8)
        let tests = try String(contentsOfFile: path("deploy/prometheus/rules_test.yml"), encoding: .utf8)
        let readme = try String(contentsOfFile: path("README.md"), encoding: .utf8)
        let alerts = rules.split(separator: "\n").compactMap { line -> String? in
            guard let range = line.range(of: "- alert: ") else { return nil }
            return String(line[range.upperBound...])
        }
        #expect(alerts.count >= 6)
        for alert in alerts {
            #expect(tests.contains("alertname: \(alert)"), "no promtool test for \(alert)")
            #expect(readme.contains("**\(alert)**"), "no runbook paragraph for \(alert) in README.md")
        }
    }

    @Test func theSystemdUnitVerifies() throws {
        // systemd-analyze needs the executable to exist: point the unit at the one just built.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("unit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let unit = try String(contentsOfFile: path("deploy/systemd/replication-sidecar.service"), encoding: .utf8)
            .replacingOccurrences(of: "/usr/local/bin/replication-sidecar", with: sidecarExecutable.path)
        let file = directory.appendingPathComponent("replication-sidecar.service")
        try unit.write(to: file, atomically: true, encoding: .utf8)
        let result = try runProcess("/usr/bin/systemd-analyze", ["verify", file.path])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(!result.errors.contains("replication-sidecar.service:"), "\(result.errors)")
    }

    @Test func theKubernetesManifestMatchesItsSchema() throws {
        let result = try runProcess(
            repositoryRoot.appendingPathComponent(".venv/bin/kubernetes-validate").path,
            ["--strict", path("deploy/kubernetes/worker-with-sidecar.yaml")])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains("passed"), "\(result.output)")
    }

    @Test func theDashboardHasItsVariablesAndAPanelForEveryFamily() throws {
        let dashboard = try Dashboard.load()
        #expect(dashboard.variables == ["datasource", "job", "instance", "name"])
        for panel in dashboard.panels {
            #expect(!panel.title.isEmpty && panel.description.count > 40, "panel \(panel.title) needs a description")
            #expect(!panel.expressions.isEmpty, "panel \(panel.title) has no query")
            #expect(panel.datasource == "${datasource}", "panel \(panel.title) must use the datasource variable")
        }
        let expressions = dashboard.panels.flatMap(\.expressions).joined(separator: "\n")
        for family in MetricFamilies.all {
            #expect(expressions.contains(family.sampleName), "no panel shows \(family.sampleName)")
        }
    }
}

/// What the tests need of the Grafana dashboard JSON.
struct Dashboard {
    struct Panel {
        var title: String
        var description: String
        var datasource: String
        var expressions: [String]
    }

    var variables: [String]
    var panels: [Panel]

    static func load() throws -> Dashboard {
        let data = try Data(contentsOf: repositoryRoot.appendingPathComponent("dashboards/replication-sidecar.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let templating = try #require(json["templating"] as? [String: Any])
        let variables = try #require(templating["list"] as? [[String: Any]]).compactMap { $0["name"] as? String }
        let panels = try #require(json["panels"] as? [[String: Any]]).map { panel in
            Panel(
                title: panel["title"] as? String ?? "", description: panel["description"] as? String ?? "",
                datasource: (panel["datasource"] as? [String: Any])?["uid"] as? String ?? "",
                expressions: (panel["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String })
        }
        return Dashboard(variables: variables, panels: panels)
    }

    /// A panel's query as Prometheus would receive it from Grafana with "All" selected.
    static func resolve(_ expression: String) -> String {
        expression.replacingOccurrences(of: "$__rate_interval", with: "1m")
            .replacingOccurrences(of: "$job", with: ".*")
            .replacingOccurrences(of: "$instance", with: ".*")
            .replacingOccurrences(of: "$name", with: ".*")
    }
}
