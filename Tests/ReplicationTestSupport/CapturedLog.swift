import Logging
import NIOConcurrencyHelpers

/// A logger whose lines are kept for the test to read.
public final class CapturedLog: Sendable {
    public struct Line: Sendable {
        public var level: Logger.Level
        public var message: String
        public var metadata: Logger.Metadata
    }

    private let lines = NIOLockedValueBox<[Line]>([])

    public init() {}

    public var logger: Logger {
        var logger = Logger(label: "captured") { _ in Handler(log: self) }
        logger.logLevel = .info
        return logger
    }

    public var all: [Line] { lines.withLockedValue { $0 } }

    /// The lines with this message.
    public func lines(_ message: String) -> [Line] { all.filter { $0.message == message } }

    private struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let line = Line(
                level: event.level, message: "\(event.message)",
                metadata: metadata.merging(event.metadata ?? [:]) { $1 })
            log.lines.withLockedValue { $0.append(line) }
        }
    }
}
