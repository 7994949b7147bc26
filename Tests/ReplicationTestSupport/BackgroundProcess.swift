import Foundation
import NIOConcurrencyHelpers

/// A program running while the test goes on, with what it prints collected as it comes.
public final class BackgroundProcess: Sendable {
    public let process: Process
    private let collected = NIOLockedValueBox((output: "", errors: ""))

    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        self.process = process
        let collected = self.collected
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            collected.withLockedValue { $0.output += text }
        }
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            collected.withLockedValue { $0.errors += text }
        }
        try process.run()
    }

    public var output: String { collected.withLockedValue { $0.output } }
    public var errors: String { collected.withLockedValue { $0.errors } }

    /// The number after `key=` in the first line of stderr that contains `marker` (e.g. a logged port).
    public func loggedNumber(_ key: String, inLineWith marker: String) -> Int? {
        for line in errors.split(separator: "\n") where line.contains(marker) {
            if let range = line.range(of: " \(key)=") { return Int(line[range.upperBound...].prefix { $0.isNumber }) }
        }
        return nil
    }

    /// SIGTERM, and the exit status.
    @discardableResult
    public func terminate() -> Int32 {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}
