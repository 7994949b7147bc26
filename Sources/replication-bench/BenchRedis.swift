import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A redis-server started for a benchmark on 127.0.0.1 and a free port, in a scratch directory, with the
/// append-only file fsynced every second; its CPU time comes from its own /proc/<pid>/stat.
final class BenchRedis {
    let port: Int
    let process: ServerProcess
    private let directory: URL

    init() throws {
        port = try LoopbackSocket.freePort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("bench-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        do {
            process = try ServerProcess(
                executable: "/usr/bin/redis-server",
                arguments: [
                    "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync",
                    "everysec", "--dir", directory.path, "--logfile", "/dev/null",
                ])
            try process.waitUntilListening(port: port)
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    /// The `serve` arguments of a sidecar sharing its streams through this Redis.
    var sidecarArguments: [String] { ["--redis", "redis://127.0.0.1:\(port)", "--server-name", "bench.example.org"] }

    var cpuSeconds: Double { process.usage.cpuSeconds }

    /// Kills the server (it may not see SIGTERM, see ``ServerProcess/stop(signal:)``) and removes its files.
    func stop() {
        process.stop(signal: SIGKILL)
        try? FileManager.default.removeItem(at: directory)
    }

    /// Redis's own count of each command it ran since it started (`INFO commandstats`), as
    /// `XREAD 812 calls 15.2 µs/call`, the busiest first.
    func commandStatistics() throws -> [String] {
        let text = try Self.output(of: "/usr/bin/redis-cli", ["-p", "\(port)", "INFO", "commandstats"])
        // "cmdstat_xread:calls=812,usec=12345,usec_per_call=15.20,…"
        let commands = text.matches(of: /cmdstat_([a-z|]+):calls=([0-9]+),usec=([0-9]+),usec_per_call=([0-9.]+)/).map {
            (name: $0.output.1.uppercased(), calls: Int($0.output.2)!, usec: Int($0.output.3)!, perCall: $0.output.4)
        }
        return commands.sorted { $0.usec > $1.usec }.map { "\($0.name) \($0.calls) calls \($0.perCall) µs/call" }
    }

    /// `redis-benchmark`'s requests per second for `XADD` of one field of `valueBytes` bytes (one client,
    /// 64 commands in flight), trimmed as the sidecars trim.
    func xaddRate(requests: Int, valueBytes: Int) throws -> Double {
        let text = try Self.output(
            of: "/usr/bin/redis-benchmark",
            [
                "-p", "\(port)", "-q", "-c", "1", "-P", "64", "-n", "\(requests)", "XADD", "redis-benchmark-stream",
                "MAXLEN", "~", "\(requests)", "*", "rows", String(repeating: "x", count: valueBytes),
            ])
        // "XADD …: 123456.79 requests per second, p50=…" (with \r progress lines before it).
        guard let match = text.firstMatch(of: /([0-9.]+) requests per second/), let rate = Double(match.output.1) else {
            throw LoopbackSocket.Failure(description: "redis-benchmark printed no rate: \(text.suffix(200))")
        }
        return rate
    }

    /// What a program printed on its standard output.
    private static func output(of executable: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return text
    }
}
