import Logging
import NIOConcurrencyHelpers
import NIOCore
import ReplicationCore

/// The lines every connection logs, as the flood gate tells them apart: a flood of bad connections is
/// summarised per close reason.
enum ConnectionLine: Hashable, Sendable {
    case opened, named, closingWithError
    case closed(CloseReason)

    func summary(_ count: Int, seconds: Int64) -> String {
        let what =
            switch self {
            case .opened: "opened"
            case .named: "named"
            case .closingWithError: "sent an ERROR before closing"
            case .closed(let reason): "closed for \(reason.rawValue)"
            }
        return "\(count) more connections \(what) in the last \(seconds) s"
    }
}

/// The server's connection lines, shared by every connection: over `linesPerInterval` alike lines an
/// interval, the rest are summarised (the connection counters in the metrics count every one).
final class ConnectionLogGate: Sendable {
    let logger: Logger
    private let clock: ConnectionClock
    private let gate: NIOLockedValueBox<LogFloodGate<ConnectionLine>>
    /// The interval, as a summary names it.
    private let intervalSeconds: Int64

    init(linesPerInterval: Int, interval: TimeAmount, clock: ConnectionClock, logger: Logger) {
        self.logger = logger
        self.clock = clock
        let millis = max(1, interval.nanoseconds / 1_000_000)
        self.intervalSeconds = millis / 1000
        self.gate = NIOLockedValueBox(LogFloodGate(linesPerInterval: linesPerInterval, intervalMillis: millis))
    }

    /// Whether `line` is logged now; an ended interval of alike lines is summarised first.
    func admit(_ line: ConnectionLine) -> Bool {
        let decision = gate.withLockedValue { $0.admit(line, now: clock.monotonicMillis) }
        if let suppressed = decision.endedIntervalSuppressed { summarise(line, suppressed) }
        return decision.log
    }

    /// Summarises the intervals that ended, so that a flood that has stopped is reported too; at shutdown,
    /// every interval with lines kept out.
    func summariseEndedIntervals(atShutdown: Bool = false) {
        let now = atShutdown ? Int64.max : clock.monotonicMillis
        let ended = gate.withLockedValue { $0.endedIntervals(now: now) }
        for (line, suppressed) in ended { summarise(line, suppressed) }
    }

    private func summarise(_ line: ConnectionLine, _ suppressed: Int) {
        var metadata: Logger.Metadata = ["suppressed": "\(suppressed)"]
        if case .closed(let reason) = line { metadata["reason"] = "\(reason.rawValue)" }
        logger.notice("\(line.summary(suppressed, seconds: intervalSeconds))", metadata: metadata)
    }
}
