import ArgumentParser
import Foundation
import ReplicationMetrics

@main
struct ReplicationSidecar: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replication-sidecar",
        abstract: "A Synapse replication server with per-connection metrics.",
        version: "replication-sidecar \(BuildInfo.version) (revision \(BuildInfo.revision))",
        subcommands: [Serve.self, Observe.self, Tail.self, Publish.self, Demo.self, Check.self],
        defaultSubcommand: Serve.self
    )

    static func main() async {
        let arguments = EnvironmentDefaults.apply(
            to: Array(CommandLine.arguments.dropFirst()), environment: ProcessInfo.processInfo.environment)
        await main(arguments)
    }
}
