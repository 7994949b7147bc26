import ArgumentParser

@main
struct ReplicationBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replication-bench",
        abstract: "Benchmarks that print figures. Build with -c release before trusting them.",
        subcommands: [FanoutBench.self, ScrapeBench.self, LogBench.self]
    )
}
