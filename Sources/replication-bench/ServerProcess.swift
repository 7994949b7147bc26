import ArgumentParser
import Foundation
import ReplicationMetrics

/// A server under test running as its own process, so that its CPU time and peak memory are its own.
final class ServerProcess {
    struct Usage {
        var cpuSeconds: Double
        var residentBytes: Double
        var peakResidentBytes: Double
    }

    let process = Process()
    private let input = Pipe()
    private let output = Pipe()

    init(executable: String, arguments: [String], currentDirectory: String? = nil) throws {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw LoopbackSocket.Failure(description: "\(executable) is missing or not executable")
        }
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    /// Reads standard output up to the first line starting with `prefix`, and returns the rest of it.
    func readLine(startingWith prefix: String, timeout: Double = 60) throws -> String {
        let deadline = monotonicNow() + timeout
        var pending = Data()
        let handle = output.fileHandleForReading
        while monotonicNow() < deadline, process.isRunning {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            pending += chunk
            let text = String(decoding: pending, as: UTF8.self)
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) {
                return String(line.dropFirst(prefix.count))
            }
        }
        throw LoopbackSocket.Failure(description: "\(process.executableURL!.lastPathComponent) did not print '\(prefix)'")
    }

    func write(_ text: String) { input.fileHandleForWriting.write(Data(text.utf8)) }

    /// Waits until something accepts connections on `port`.
    func waitUntilListening(port: Int, timeout: Double = 60) throws {
        let deadline = monotonicNow() + timeout
        while monotonicNow() < deadline {
            guard process.isRunning else { break }
            if let fd = try? LoopbackSocket.connect(port: port) {
                close(fd)
                return
            }
            usleep(20_000)
        }
        throw LoopbackSocket.Failure(description: "\(process.executableURL!.lastPathComponent) is not listening on \(port)")
    }

    /// CPU seconds so far (user and system) and memory, from /proc.
    var usage: Usage {
        let pid = process.processIdentifier
        let figures = ProcessStatistics.cpuAndResident(ofProcess: pid)
        // The peak resident size is not in /proc/<pid>/stat: VmHWM of status, in KiB.
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let peakKiB = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }
            .flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Double($0) } ?? 0
        return Usage(
            cpuSeconds: figures?.cpuSeconds ?? 0, residentBytes: figures?.residentBytes ?? 0,
            peakResidentBytes: peakKiB * 1024)
    }

    /// Ends the process with `signal` and waits for it. SIGKILL for a child that may not see SIGTERM (one
    /// started from a thread that blocks it inherits the block: redis-server then never exits).
    func stop(signal: Int32 = SIGTERM) {
        try? input.fileHandleForWriting.close()
        if process.isRunning { kill(process.processIdentifier, signal) }
        process.waitUntilExit()
    }
}

/// Where the benchmarks find what they start: the sidecar beside this executable, and the Python
/// environment and scripts of the interop tests in the package.
struct BenchEnvironment {
    var packageRoot: String

    var sidecar: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("replication-sidecar").path
    }

    var python: String { packageRoot + "/.venv-synapse/bin/python" }

    func script(_ name: String) -> String { packageRoot + "/Tests/Interop/" + name }
}

/// The options every benchmark that starts Synapse shares.
struct SynapseOptions: ParsableArguments {
    @Option(help: "The package's root (for .venv-synapse and Tests/Interop).")
    var packageRoot = FileManager.default.currentDirectoryPath

    @Flag(help: "Leave out Synapse (when its Python environment is not installed).")
    var withoutSynapse = false

    var environment: BenchEnvironment { BenchEnvironment(packageRoot: packageRoot) }

    func validate() throws {
        if !withoutSynapse, !FileManager.default.isExecutableFile(atPath: environment.python) {
            throw ValidationError(
                "no Synapse environment under \(packageRoot)/.venv-synapse: run 'bash deploy/setup.sh' first, "
                    + "pass --package-root, or use --without-synapse")
        }
    }
}
