import Foundation

/// Waiting on a condition with a deadline: never sleeping for "long enough".
public struct Timeout: Error, CustomStringConvertible {
    public var seconds: Double
    public init(seconds: Double) { self.seconds = seconds }
    public var description: String { "condition not met within \(seconds) s" }
}

/// Checks `condition` every few milliseconds until it holds; throws ``Timeout`` after `seconds`.
public func waitUntil(seconds: Double = 10, _ condition: () async -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while !(await condition()) {
        guard Date() < deadline else { throw Timeout(seconds: seconds) }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// The blocking form of ``waitUntil(seconds:_:)``, for code that is not async.
public func waitUntilTrue(seconds: Double = 10, _ condition: () -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        guard Date() < deadline else { throw Timeout(seconds: seconds) }
        usleep(5_000)
    }
}
