import ArgumentParser

@main
struct ReplicationSidecar: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replication-sidecar",
        abstract: "A Synapse replication server with per-connection metrics.",
        subcommands: [Serve.self, Tail.self, Publish.self, Demo.self, Check.self],
        defaultSubcommand: Serve.self
    )
}
