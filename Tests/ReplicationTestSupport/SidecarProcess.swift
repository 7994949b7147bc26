import Foundation

/// The `replication-sidecar` executable, built beside the test bundle.
public var sidecarExecutable: URL {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("replication-sidecar")
}

/// The `replication-sidecar` executable run as a real server process.
public final class SidecarProcess: @unchecked Sendable {  // driven by one test at a time
    public let process = Process()
    public private(set) var port = 0
    private let errors = Pipe()

    /// Starts `serve` with `arguments` on `port` (0: a free one) and waits until it logs its listening port.
    public init(serve arguments: [String], port requested: Int = 0) throws {
        process.executableURL = sidecarExecutable
        process.arguments = ["serve", "--port", "\(requested)", "--metrics-port", "0"] + arguments
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var log = ""
        let deadline = Date().addingTimeInterval(30)
        while port == 0 {
            guard Date() < deadline, process.isRunning else { throw SocketError("sidecar did not start: \(log)") }
            let chunk = errors.fileHandleForReading.availableData
            log += String(decoding: chunk, as: UTF8.self)
            for line in log.split(separator: "\n") where line.contains("replication listener ready") {
                if let range = line.range(of: " port=") {
                    port = Int(line[range.upperBound...].prefix { $0.isNumber }) ?? 0
                }
            }
        }
        // Keep draining its log so that it never blocks on a full pipe.
        errors.fileHandleForReading.readabilityHandler = { _ = $0.availableData }
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
