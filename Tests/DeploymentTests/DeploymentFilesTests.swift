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

    @Test func everyAlertHasARunbookAJobSelectorAndAUnitTest() throws {
        let rules = try PrometheusRules.load()
        let tests = try String(contentsOfFile: path("deploy/prometheus/rules_test.yml"), encoding: .utf8)
        let readme = try String(contentsOfFile: path("README.md"), encoding: .utf8)
        #expect(rules.alerts.count >= 10)
        #expect(rules.alerts.contains { $0.expression == #"absent(up{job="replication-sidecar"})"# })
        for alert in rules.alerts {
            #expect(tests.contains("alertname: \(alert.name)"), "no promtool test for \(alert.name)")
            // GitHub's anchor for the heading `#### <alert>`.
            #expect(readme.contains("\n#### \(alert.name)\n"), "no runbook section for \(alert.name) in README.md")
            #expect(
                alert.runbookURL?.hasSuffix("README.md#\(alert.name.lowercased())") == true,
                "\(alert.name) has no runbook_url to its README section")
        }
        for expression in rules.alerts.map(\.expression) + rules.recordings.map(\.expression) {
            #expect(expression.contains(#"job="replication-sidecar""#), "no job selector: \(expression)")
        }
    }

    @Test func recordingRulesAreNamedLevelMetricOperations() throws {
        let families = Set(MetricFamilies.all.map(\.name))
        for recording in try PrometheusRules.load().recordings {
            let parts = recording.name.split(separator: ":", omittingEmptySubsequences: false)
            #expect(parts.count == 3, "\(recording.name) is not level:metric:operations")
            guard parts.count == 3 else { continue }
            #expect(families.contains(String(parts[1])), "\(recording.name): '\(parts[1])' is no metric family")
            // The level names the labels kept, besides job: `sum by (job, instance, stream_name)` is instance_stream_name.
            let kept = try #require(recording.expression.firstMatch(of: #/by \(([^)]*)\)/#)).output.1
                .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { $0 != "job" }
            #expect(kept.joined(separator: "_") == parts[0], "\(recording.name): \(recording.expression)")
            // The operation names the function and its range: rate1m is rate(…[1m]).
            let operation = try #require(String(parts[2]).firstMatch(of: #/^([a-z]+)(\d+[smh])$/#))
            #expect(recording.expression.contains("\(operation.output.1)(") && recording.expression.contains("[\(operation.output.2)]"))
        }
    }

    @Test func ratesAreTakenOfCountersOnly() throws {
        let rules = try PrometheusRules.load()
        let expressions =
            try Dashboard.load().panels.flatMap(\.expressions) + rules.alerts.map(\.expression)
            + rules.recordings.map(\.expression)
        let families = MetricFamilies.all + SharedStreamsMetricFamilies.all
        let counters = Set(families.filter { $0.kind == .counter }.map(\.sampleName))
            .union(families.filter { $0.kind == .histogram }.map { $0.name + "_bucket" })
        #expect(try expectRatesOfCountersOnly(expressions, counters: counters) >= 15)
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

    /// The unit's settings and the example environment file, as systemd would hand them over: the server
    /// starts from them alone and tells systemd when it is ready.
    @Test func theSystemdEnvironmentStartsTheServer() throws {
        let unit = try String(contentsOfFile: path("deploy/systemd/replication-sidecar.service"), encoding: .utf8)
        let lines = unit.split(separator: "\n").map(String.init)
        #expect(lines.contains("Type=notify") && lines.contains("NotifyAccess=main"))
        #expect(lines.contains("EnvironmentFile=-/etc/default/replication-sidecar"))
        #expect(lines.contains("ExecStart=/usr/local/bin/replication-sidecar serve"))
        var environment: [String: String] = [:]
        let assignments =
            lines.filter { $0.hasPrefix("Environment=") }.flatMap { $0.dropFirst(12).split(separator: " ") }
            + (try String(contentsOfFile: path("deploy/systemd/replication-sidecar.env"), encoding: .utf8))
            .split(separator: "\n").filter { !$0.hasPrefix("#") }
        for assignment in assignments {
            let parts = assignment.split(separator: "=", maxSplits: 1).map(String.init)
            environment[parts[0]] = parts[1]
        }
        #expect(environment.count >= 8)
        // Where this machine differs from a real host: a temporary state directory and free ports.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("unit-env-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        environment["REPLICATION_SIDECAR_DATA_DIR"] = directory.path
        environment["REPLICATION_SIDECAR_WEB_LISTEN_ADDRESS"] = "127.0.0.1:0"
        let notify = try NotifySocket(abstract: false)
        environment["NOTIFY_SOCKET"] = notify.name
        let sidecar = try SidecarProcess(serve: [], environment: environment)
        #expect(try notify.receive() == "READY=1")
        #expect(try LineSocket(port: sidecar.port).readLine() == "SERVER example.com")
        let writer = try LineSocket(port: sidecar.port)
        try writer.send("NAME synapse.app.main\nPOSITION events 5\n")
        #expect(try writer.readLines { $0.hasPrefix("POSITION") || $0.hasPrefix("ERROR") }.last == "POSITION events 5")
        #expect(sidecar.terminate() == 0)
        #expect(try notify.receive() == "STOPPING=1")
    }

    @Test func theKubernetesManifestMatchesItsSchema() throws {
        // 1.29 is the first release with native sidecars on by default; 1.27 did not know them.
        for version in ["1.29.0", "1.37.0"] {
            let result = try runProcess(
                repositoryRoot.appendingPathComponent(".venv/bin/kubernetes-validate").path,
                [
                    "--strict", "-k", version, path("deploy/kubernetes/worker-with-sidecar.yaml"),
                    path("deploy/kubernetes/sidecars-through-redis.yaml"),
                ])
            #expect(result.status == 0, "\(result.output)\(result.errors)")
            #expect(result.output.contains("passed"), "\(result.output)")
        }
    }

    /// What no schema checks: the sidecar runs as a native sidecar with the probes it needs, and the
    /// PodMonitor (a custom resource kubernetes-validate has no schema for) selects the pod and names
    /// ports that exist.
    @Test func theKubernetesSidecarAndPodMonitorFitTogether() throws {
        let script = """
            import sys, yaml
            deployment = yaml.safe_load(open(sys.argv[1]))
            monitor = yaml.safe_load(open(sys.argv[2]))
            pod = deployment["spec"]["template"]
            spec = pod["spec"]
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, "seccompProfile"
            sidecar = next(c for c in spec["initContainers"] if c["name"] == "replication-sidecar")
            assert sidecar["restartPolicy"] == "Always", "not a native sidecar"
            assert not any(c["name"] == "replication-sidecar" for c in spec["containers"])
            probes = {kind: sidecar[kind]["httpGet"]["path"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
            assert probes == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}, probes
            env = {e["name"]: e["value"] for e in sidecar["env"]}
            assert env["REPLICATION_SIDECAR_WEB_LISTEN_ADDRESS"].endswith(":9469")
            assert monitor["kind"] == "PodMonitor" and monitor["apiVersion"] == "monitoring.coreos.com/v1"
            labels = pod["metadata"]["labels"]
            assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items()), "selector"
            ports = {p["name"]: c["name"] for c in spec["containers"] + spec["initContainers"] for p in c.get("ports", [])}
            scraped = {ports[e["port"]]: e for e in monitor["spec"]["podMetricsEndpoints"]}
            assert set(scraped) == {"replication-sidecar", "synapse-worker"}, scraped
            job = [r["replacement"] for r in scraped["replication-sidecar"]["relabelings"] if r["targetLabel"] == "job"]
            assert job == ["replication-sidecar"], job
            print("consistent")
            """
        let result = try runProcess(
            projectPython,
            ["-c", script, path("deploy/kubernetes/worker-with-sidecar.yaml"), path("deploy/kubernetes/podmonitor.yaml")])
        #expect(result.status == 0 && result.output == "consistent\n", "\(result.errors)")
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
        for family in MetricFamilies.all + SharedStreamsMetricFamilies.all {
            #expect(expressions.contains(family.sampleName), "no panel shows \(family.sampleName)")
        }
        // Several sidecars on one dashboard: every series says which one it is.
        for panel in dashboard.panels {
            for legend in panel.legends {
                #expect(legend.contains("{{instance}}"), "panel \(panel.title): legend '\(legend)' lacks {{instance}}")
            }
            for expression in panel.expressions where expression.contains(" by (") {
                #expect(expression.contains(" by (instance"), "panel \(panel.title) aggregates instances away: \(expression)")
            }
        }
    }

    @Test func theDashboardImportsWithADataSourceInput() throws {
        let data = try Data(contentsOf: repositoryRoot.appendingPathComponent("dashboards/replication-sidecar.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let inputs = try #require(json["__inputs"] as? [[String: Any]])
        #expect(inputs.count == 1)
        #expect(inputs.first?["name"] as? String == "DS_PROMETHEUS")
        #expect(inputs.first?["type"] as? String == "datasource" && inputs.first?["pluginId"] as? String == "prometheus")
        let requires = try #require(json["__requires"] as? [[String: Any]])
        #expect(requires.contains { $0["id"] as? String == "prometheus" })
        let variable = try #require(((json["templating"] as? [String: Any])?["list"] as? [[String: Any]])?.first)
        #expect((variable["current"] as? [String: Any])?["value"] as? String == "${DS_PROMETHEUS}")
    }
}

/// Expects every `rate`/`irate`/`increase`/`delta` in `expressions` to be taken of one of `counters`;
/// returns how many were checked.
func expectRatesOfCountersOnly(_ expressions: [String], counters: Set<String>) throws -> Int {
    let rated = try Regex(#"(?:rate|irate|increase|delta)\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)"#)
    var checked = 0
    for expression in expressions {
        for match in expression.matches(of: rated) {
            let metric = String(match.output[1].substring ?? "")
            #expect(counters.contains(metric), "rate() of \(metric), which is not a counter: \(expression)")
            checked += 1
        }
    }
    return checked
}

/// What the tests need of the Grafana dashboard JSON.
struct Dashboard {
    struct Panel {
        var title: String
        var description: String
        var datasource: String
        var expressions: [String]
        var legends: [String]
    }

    var variables: [String]
    var panels: [Panel]

    static func load(_ file: String = "dashboards/replication-sidecar.json") throws -> Dashboard {
        let data = try Data(contentsOf: repositoryRoot.appendingPathComponent(file))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let templating = try #require(json["templating"] as? [String: Any])
        let variables = try #require(templating["list"] as? [[String: Any]]).compactMap { $0["name"] as? String }
        let panels = try #require(json["panels"] as? [[String: Any]]).map { panel in
            Panel(
                title: panel["title"] as? String ?? "", description: panel["description"] as? String ?? "",
                datasource: (panel["datasource"] as? [String: Any])?["uid"] as? String ?? "",
                expressions: (panel["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String },
                legends: (panel["targets"] as? [[String: Any]] ?? []).compactMap { $0["legendFormat"] as? String })
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

/// What the tests need of `deploy/prometheus/rules.yml`, read line by line (one rule field per line).
struct PrometheusRules {
    struct Rule {
        var name: String
        var expression: String
        var runbookURL: String?
    }

    var alerts: [Rule] = []
    var recordings: [Rule] = []

    static func load(_ file: String = "deploy/prometheus/rules.yml") throws -> PrometheusRules {
        let text = try String(contentsOf: repositoryRoot.appendingPathComponent(file), encoding: .utf8)
        var rules = PrometheusRules()
        var current: (isAlert: Bool, rule: Rule)?
        func finish() {
            guard let current else { return }
            if current.isAlert { rules.alerts.append(current.rule) } else { rules.recordings.append(current.rule) }
        }
        for line in text.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            if line.hasPrefix("- alert: ") || line.hasPrefix("- record: ") {
                finish()
                let name = line[line.index(after: line.firstIndex(of: ":")!)...].trimmingCharacters(in: .whitespaces)
                current = (line.hasPrefix("- alert: "), Rule(name: name, expression: ""))
            } else if line.hasPrefix("expr: ") {
                current?.rule.expression = String(line.dropFirst(6))
            } else if line.hasPrefix("runbook_url: ") {
                current?.rule.runbookURL = String(line.dropFirst(13)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
        }
        finish()
        return rules
    }
}
