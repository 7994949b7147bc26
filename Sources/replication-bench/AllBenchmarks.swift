import ArgumentParser
import Foundation

/// Every benchmark in one run, with the defaults BENCHMARKS.md reports (a few minutes on two cores).
struct AllBenchmarks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "all", abstract: "Fan-out, catch-up, acknowledgement latency, idle memory, codec, scrape and log benchmarks, in turn.")

    @Option(help: "The package's root (for .venv-synapse and Tests/Interop).")
    var packageRoot = FileManager.default.currentDirectoryPath

    func run() async throws {
        let root = ["--package-root", packageRoot]
        let started = monotonicNow()
        print(machineDescription())
        // The default configuration (SQLite, --sync full) first, the in-memory log beside it.
        let fanout = ["--log", "sqlite,memory", "--subscribers", "1,16,64,256", "--catch-up"]
        try section { try FanoutBench.parse(root + fanout).run() }
        let restart = ["--rows", "1000000", "--subscribers", "16", "--catch-up", "--restart", "--without-synapse"]
        try section { try FanoutBench.parse(root + restart).run() }
        let throughRedis = ["--rows", "100000", "--subscribers", "16", "--log", "memory", "--through-redis", "--without-synapse"]
        try section { try FanoutBench.parse(root + throughRedis).run() }
        try section { try AckLatencyBench.parse(root + ["--through-redis"]).run() }
        try section { try IdleMemoryBench.parse(root).run() }
        try section { try CodecBench.parse(root).run() }
        try await asyncSection { try await ScrapeBench.parse([]).run() }
        try await asyncSection { try await LogBench.parse([]).run() }
        print(String(format: "all benchmarks took %.0f s", monotonicNow() - started))
    }

    private func section(_ body: () throws -> Void) throws {
        print("")
        try body()
    }

    private func asyncSection(_ body: () async throws -> Void) async throws {
        print("")
        try await body()
    }

    private func machineDescription() -> String {
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }?
            .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        let memory = Double(ProcessInfo.processInfo.physicalMemory) / 1_073_741_824
        return String(format: "machine: %@, %d cores, %.0f GiB; kernel %@", cpu, ProcessInfo.processInfo.activeProcessorCount,
            memory, ProcessInfo.processInfo.operatingSystemVersionString)
    }
}
