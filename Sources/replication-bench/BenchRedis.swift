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

    /// `redis-benchmark`'s requests per second for `XADD` of one field of `valueBytes` bytes (one client,
    /// 64 commands in flight), trimmed as the sidecars trim.
    func xaddRate(requests: Int, valueBytes: Int) throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-benchmark")
        process.arguments = [
            "-p", "\(port)", "-q", "-c", "1", "-P", "64", "-n", "\(requests)", "XADD", "redis-benchmark-stream",
            "MAXLEN", "~", "\(requests)", "*", "rows", String(repeating: "x", count: valueBytes),
        ]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        // "XADD …: 123456.79 requests per second, p50=…" (with \r progress lines before it).
        guard let match = text.firstMatch(of: /([0-9.]+) requests per second/), let rate = Double(match.output.1) else {
            throw LoopbackSocket.Failure(description: "redis-benchmark printed no rate: \(text.suffix(200))")
        }
        return rate
    }
}
