import Foundation

/// The `replication-sidecar` executable, built beside the test bundle.
public var sidecarExecutable: URL {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("replication-sidecar")
}

/// The `replication-sidecar` executable run as a real server process.
public final class SidecarProcess: @unchecked Sendable {  // driven by one test at a time
    public let process = Process()
    public private(set) var port = 0
    public private(set) var metricsPort = 0
    /// The TLS listener's port, when started with `--tls-port`.
    public private(set) var tlsPort: Int?
    /// What it logged up to and including the line saying the replication listener is ready.
    public private(set) var startupLog = ""
    private let errors = Pipe()

    /// Starts `serve` with `arguments` on `port` (0: a free one) and waits until it logs its listening port.
    /// The metrics endpoint takes a free port unless the arguments or `environment` say where it listens.
    public init(serve arguments: [String], port requested: Int = 0, environment: [String: String] = [:]) throws {
        process.executableURL = sidecarExecutable
        let listenGiven =
            arguments.contains { $0.hasPrefix("--web.listen-address") || $0.hasPrefix("--metrics-port") }
            || environment.keys.contains { $0.hasPrefix("REPLICATION_SIDECAR_WEB_LISTEN") }
        process.arguments = ["serve", "--port", "\(requested)"] + (listenGiven ? [] : ["--metrics-port", "0"]) + arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while port == 0 {
            guard Date() < deadline, process.isRunning else { throw SocketError("sidecar did not start: \(startupLog)") }
            let chunk = errors.fileHandleForReading.availableData
            startupLog += String(decoding: chunk, as: UTF8.self)
            for line in startupLog.split(separator: "\n") {
                if line.contains("metrics endpoint ready") { metricsPort = Self.port(in: line) }
                if line.contains("replication listener ready") {
                    port = Self.port(in: line)
                    tlsPort = arguments.contains("--tls-port") ? Self.port(in: line, field: "tls_port") : nil
                }
            }
        }
        // Keep draining its log so that it never blocks on a full pipe.
        errors.fileHandleForReading.readabilityHandler = { _ = $0.availableData }
    }

    /// A port field of a log line, in logfmt (`port=9092`) or JSON (`"port":"9092"`).
    static func port(in line: Substring, field: String = "port") -> Int {
        let pattern = try! Regex<(Substring, Substring?, Substring?)>(#" \#(field)=(\d+)|"\#(field)":"(\d+)""#)
        guard let match = line.firstMatch(of: pattern) else { return 0 }
        return Int(match.output.1 ?? match.output.2 ?? "") ?? 0
    }

    /// Waits until the process handles SIGTERM itself (its service group runs a moment after the listeners
    /// are ready; a SIGTERM before that would kill it outright), read from /proc.
    public func waitUntilHandlingSIGTERM() throws {
        let bit = UInt64(1) << UInt64(SIGTERM - 1)
        try waitUntilTrue {
            let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
            return status.split(separator: "\n").contains { line in
                guard line.hasPrefix("SigIgn:") || line.hasPrefix("SigCgt:"),
                    let mask = UInt64(line.split(separator: "\t").last ?? "", radix: 16)
                else { return false }
                return mask & bit != 0
            }
        }
    }

    /// SIGKILL: no chance to flush or say goodbye.
    public func kill() {
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        errors.fileHandleForReading.readabilityHandler = nil
    }

    /// SIGTERM, then waits for the exit status.
    public func terminate() -> Int32 {
        process.terminate()
        process.waitUntilExit()
        errors.fileHandleForReading.readabilityHandler = nil
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill() }
    }
}
