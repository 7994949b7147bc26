import Foundation

/// `replication-sidecar tail` as a process, its output read line by line with a deadline.
public final class TailProcess {
    private let process = Process()
    private let output = Pipe()
    private var partial = ""
    /// Every line printed so far.
    public private(set) var lines: [String] = []

    /// Starts `tail` with these arguments (after `tail`).
    public init(_ arguments: [String]) throws {
        process.executableURL = sidecarExecutable
        process.arguments = ["tail"] + arguments
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    deinit { stop() }

    /// For signals (SIGSTOP, SIGCONT).
    public var processIdentifier: Int32 { process.processIdentifier }

    /// The exit status once it has exited by itself.
    public var exitStatus: Int32? { process.isRunning ? nil : process.terminationStatus }

    /// Reads until `count` lines have been printed in all; throws ``Timeout`` after `seconds`.
    @discardableResult
    public func waitForLines(_ count: Int, seconds: Double = 30) throws -> [String] {
        let deadline = Date().addingTimeInterval(seconds)
        while lines.count < count {
            guard Date() < deadline else { throw Timeout(seconds: seconds) }
            var ready = pollfd(fd: output.fileHandleForReading.fileDescriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 1_000) > 0 else { continue }
            partial += String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
            while let newline = partial.firstIndex(of: "\n") {
                lines.append(String(partial[..<newline]))
                partial = String(partial[partial.index(after: newline)...])
            }
        }
        return lines
    }

    public func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}
