import ArgumentParser

@main
struct ReplicationBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replication-bench",
        abstract: "Benchmarks that print figures. Build with -c release before trusting them.",
        subcommands: [
            AllBenchmarks.self, FanoutBench.self, IdleMemoryBench.self, CodecBench.self, ScrapeBench.self, LogBench.self,
            SoakBench.self, AckLatencyBench.self,
        ]
    )
}
