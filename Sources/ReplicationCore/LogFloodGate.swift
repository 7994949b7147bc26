/// Keeps a flood of alike lines (a burst of bad connections) from flooding the log. Per key, the first
/// `linesPerInterval` lines of an interval are logged; the rest are only counted, and the count is reported
/// as one summary line once the interval has ended. What happened stays counted in the metrics, which are
/// never limited: the gate only decides what is written to the log.
public struct LogFloodGate<Key: Hashable & Sendable>: Sendable {
    public let linesPerInterval: Int
    public let intervalMillis: Int64
    private var intervals: [Key: Interval] = [:]

    private struct Interval: Sendable {
        var start: Int64
        var logged = 0
        var suppressed = 0
    }

    /// Whether a line is logged now, and how many lines of `key` an interval that has just ended kept out
    /// of the log (to be summarised first).
    public struct Decision: Equatable, Sendable {
        public var log: Bool
        public var endedIntervalSuppressed: Int?

        package init(log: Bool, endedIntervalSuppressed: Int?) {
            self.log = log
            self.endedIntervalSuppressed = endedIntervalSuppressed
        }
    }

    public init(linesPerInterval: Int, intervalMillis: Int64) {
        precondition(linesPerInterval >= 0 && intervalMillis > 0)
        self.linesPerInterval = linesPerInterval
        self.intervalMillis = intervalMillis
    }

    public mutating func admit(_ key: Key, now: Int64) -> Decision {
        var ended: Int?
        if let current = intervals[key], now - current.start >= intervalMillis {
            ended = current.suppressed > 0 ? current.suppressed : nil
            intervals[key] = nil
        }
        var interval = intervals[key] ?? Interval(start: now)
        let log = interval.logged < linesPerInterval
        if log { interval.logged += 1 } else { interval.suppressed += 1 }
        intervals[key] = interval
        return Decision(log: log, endedIntervalSuppressed: ended)
    }

    /// The keys whose interval has ended with lines kept out of the log, and how many; ended intervals are
    /// forgotten. Called periodically, so that a flood that stopped is still summarised.
    public mutating func endedIntervals(now: Int64) -> [(key: Key, suppressed: Int)] {
        var summaries: [(key: Key, suppressed: Int)] = []
        for (key, interval) in intervals where now - interval.start >= intervalMillis {
            if interval.suppressed > 0 { summaries.append((key, interval.suppressed)) }
            intervals[key] = nil
        }
        return summaries
    }
}
