import Foundation
import ReplicationMetrics
import ReplicationTestSupport
import Testing

/// The dashboard and rules of `observe`, checked with the tools that consume them.
@Suite struct SynapseBusFilesTests {
    let rulesFile = "deploy/prometheus/synapse-bus-rules.yml"

    @Test func rulesCheckAndPassTheirUnitTests() throws {
        for arguments in [
            ["check", "rules", rulesFile], ["test", "rules", "deploy/prometheus/synapse-bus-rules_test.yml"],
        ] {
            let result = try runProcess(
                "/usr/bin/promtool",
                [arguments[0], arguments[1], repositoryRoot.appendingPathComponent(arguments[2]).path])
            #expect(result.status == 0, "promtool \(arguments): \(result.output)\(result.errors)")
        }
    }

    @Test func everyAlertHasARunbookAJobSelectorAndAUnitTest() throws {
        let rules = try PrometheusRules.load(rulesFile)
        let tests = try String(
            contentsOf: repositoryRoot.appendingPathComponent("deploy/prometheus/synapse-bus-rules_test.yml"),
            encoding: .utf8)
        let readme = try String(contentsOf: repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(rules.alerts.count == 6)
        for alert in rules.alerts {
            #expect(tests.contains("alertname: \(alert.name)"), "no promtool test for \(alert.name)")
            #expect(readme.contains("\n#### \(alert.name)\n"), "no runbook section for \(alert.name) in README.md")
            #expect(alert.runbookURL?.hasSuffix("README.md#\(alert.name.lowercased())") == true, "\(alert.name)")
        }
        for expression in rules.alerts.map(\.expression) + rules.recordings.map(\.expression) {
            #expect(expression.contains(#"job="synapse-bus""#), "no job selector: \(expression)")
        }
        let families = Set(BusMetricFamilies.all.map(\.name))
        for recording in rules.recordings {
            let parts = recording.name.split(separator: ":")
            #expect(parts.count == 3 && families.contains(String(parts[1])), "\(recording.name)")
        }
    }

    @Test func theDashboardShowsEveryFamilyAndRatesOnlyCounters() throws {
        let dashboard = try Dashboard.load("dashboards/synapse-bus.json")
        #expect(dashboard.variables == ["datasource", "job", "instance", "stream_name"])
        for panel in dashboard.panels {
            #expect(!panel.title.isEmpty && panel.description.count > 40, "panel \(panel.title) needs a description")
            #expect(!panel.expressions.isEmpty && panel.datasource == "${datasource}", "panel \(panel.title)")
            for legend in panel.legends { #expect(legend.contains("{{instance}}"), "panel \(panel.title): \(legend)") }
        }
        let rules = try PrometheusRules.load(rulesFile)
        let expressions =
            dashboard.panels.flatMap(\.expressions) + rules.alerts.map(\.expression)
            + rules.recordings.map(\.expression)
        let all = expressions.joined(separator: "\n")
        for family in BusMetricFamilies.all {
            let shown = family.kind == .histogram ? family.name + "_bucket" : family.sampleName
            #expect(all.contains(shown), "no panel shows \(shown)")
        }
        let counters = Set(BusMetricFamilies.all.filter { $0.kind == .counter }.map(\.sampleName))
            .union(BusMetricFamilies.all.filter { $0.kind == .histogram }.map { $0.name + "_bucket" })
        #expect(try expectRatesOfCountersOnly(expressions, counters: counters) >= 10)
    }
}
