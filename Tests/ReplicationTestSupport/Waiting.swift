import Foundation

/// Waiting on a condition with a deadline: never sleeping for "long enough".
public struct Timeout: Error, CustomStringConvertible {
    public var seconds: Double
    /// Where the wait was, so that a test with several waits says which one ran out.
    public var location: String
    public init(seconds: Double, file: StaticString = #fileID, line: UInt = #line) {
        self.seconds = seconds
        location = "\(file):\(line)"
    }
    public var description: String { "condition not met within \(seconds) s (\(location))" }
}

/// Checks `condition` every few milliseconds until it holds; throws ``Timeout`` after `seconds`.
public func waitUntil(
    seconds: Double = 10, file: StaticString = #fileID, line: UInt = #line, _ condition: () async -> Bool
) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while !(await condition()) {
        guard Date() < deadline else { throw Timeout(seconds: seconds, file: file, line: line) }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// The blocking form of ``waitUntil(seconds:_:)``, for code that is not async.
public func waitUntilTrue(
    seconds: Double = 10, file: StaticString = #fileID, line: UInt = #line, _ condition: () -> Bool
) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        guard Date() < deadline else { throw Timeout(seconds: seconds, file: file, line: line) }
        usleep(5_000)
    }
}
