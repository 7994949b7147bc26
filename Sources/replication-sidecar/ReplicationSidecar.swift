import ArgumentParser
import Foundation
import ReplicationMetrics

@main
struct ReplicationSidecar: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replication-sidecar",
        abstract: "A Synapse replication server with per-connection metrics.",
        version: "replication-sidecar \(BuildInfo.version) (revision \(BuildInfo.revision))",
        subcommands: [Serve.self, Observe.self, Tail.self, Publish.self, Demo.self, Check.self, Admin.self],
        defaultSubcommand: Serve.self
    )

    static func main() async {
        let (arguments, variables) = EnvironmentDefaults.apply(
            to: Array(CommandLine.arguments.dropFirst()), environment: ProcessInfo.processInfo.environment)
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            // A message about a flag may be about a variable: say which flags came from the environment.
            if exitCode(for: error) != .success, !variables.isEmpty {
                FileHandle.standardError.write(
                    Data("replication-sidecar: flags taken from the environment: \(variables.joined(separator: ", "))\n".utf8))
            }
            exit(withError: error)
        }
    }
}
