import ReplicationCore
import Testing

@Suite struct LogFloodGateTests {
    typealias Decision = LogFloodGate<String>.Decision

    @Test func linesOverTheRateAreCountedAndSummarisedWhenTheNextIntervalStarts() {
        var gate = LogFloodGate<String>(linesPerInterval: 3, intervalMillis: 10_000)
        let first = (0..<10).map { gate.admit("lost", now: 1_000 + Int64($0)) }
        #expect(first.map(\.log) == [true, true, true] + Array(repeating: false, count: 7))
        #expect(first.allSatisfy { $0.endedIntervalSuppressed == nil })
        // Still within the interval that began at the first line.
        #expect(gate.admit("lost", now: 10_999) == Decision(log: false, endedIntervalSuppressed: nil))
        // The next line starts a new interval: logged, after the 8 kept out of the last one.
        #expect(gate.admit("lost", now: 11_000) == Decision(log: true, endedIntervalSuppressed: 8))
        #expect(gate.admit("lost", now: 11_001) == Decision(log: true, endedIntervalSuppressed: nil))
    }

    @Test func eachKeyHasItsOwnRate() {
        var gate = LogFloodGate<String>(linesPerInterval: 1, intervalMillis: 10_000)
        #expect(gate.admit("lost", now: 0).log)
        #expect(!gate.admit("lost", now: 1).log)
        #expect(gate.admit("timeout", now: 2).log)
        #expect(!gate.admit("timeout", now: 3).log)
        #expect(!gate.admit("timeout", now: 4).log)
        let ended = gate.endedIntervals(now: 10_002).sorted { $0.key < $1.key }
        #expect(ended.map(\.key) == ["lost", "timeout"])
        #expect(ended.map(\.suppressed) == [1, 2])
    }

    @Test func aFloodThatStoppedIsSummarisedOnceAndAQuietKeyNever() {
        var gate = LogFloodGate<String>(linesPerInterval: 2, intervalMillis: 10_000)
        for millis in 0..<5 { _ = gate.admit("flood", now: Int64(millis)) }
        _ = gate.admit("quiet", now: 0)
        #expect(gate.endedIntervals(now: 9_999).isEmpty)
        let ended = gate.endedIntervals(now: 10_000)
        #expect(ended.map(\.key) == ["flood"] && ended.map(\.suppressed) == [3])
        #expect(gate.endedIntervals(now: 30_000).isEmpty)
        // After the summary, the next line starts afresh with nothing to report.
        #expect(gate.admit("flood", now: 30_001) == Decision(log: true, endedIntervalSuppressed: nil))
    }

    @Test func noLinesAtAllWhenTheRateIsZero() {
        var gate = LogFloodGate<String>(linesPerInterval: 0, intervalMillis: 1_000)
        #expect(!gate.admit("lost", now: 0).log)
        #expect(gate.admit("lost", now: 1_000) == Decision(log: false, endedIntervalSuppressed: 1))
    }
}
