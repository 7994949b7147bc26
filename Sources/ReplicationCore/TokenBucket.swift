/// A rate limit with bursts: `capacity` takes at once, refilled at `perSecond`. Time is the caller's
/// monotonic milliseconds, so tests drive it with a manual clock.
public struct TokenBucket: Sendable, Equatable {
    public let perSecond: Int
    public let capacity: Int
    /// Thousandths of a take, so that refills at any rate stay whole numbers.
    private var milliTakes: Int64
    private var lastRefill: Int64

    public init(perSecond: Int, capacity: Int, now: Int64) {
        precondition(perSecond > 0 && capacity > 0)
        self.perSecond = perSecond
        self.capacity = capacity
        self.milliTakes = Int64(capacity) * 1000
        self.lastRefill = now
    }

    /// Takes one if there is one left; false when the rate is exceeded.
    public mutating func take(now: Int64) -> Bool {
        let elapsed = max(0, now - lastRefill)
        lastRefill = max(lastRefill, now)
        milliTakes = min(Int64(capacity) * 1000, milliTakes + elapsed * Int64(perSecond))
        guard milliTakes >= 1000 else { return false }
        milliTakes -= 1000
        return true
    }
}
