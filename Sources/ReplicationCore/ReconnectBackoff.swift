/// When a client reconnects after losing its connection: 1 s, then ×e each time, at most 30 s, each
/// delay moved by up to ±12 % at random so that many workers do not reconnect in lockstep. The delay
/// goes back to the start only once a connection has finished connecting (caught up on every stream).
public struct ReconnectBackoff: Sendable, Equatable {
    public var initialMillis: Double = 1_000
    public var factor: Double = 2.718_281_828_459_045
    public var maximumMillis: Double = 30_000
    public var jitter: Double = 0.12
    private var attempt = 0

    public init() {}

    /// The next delay; `random` is uniform in -1...1 (the caller's generator, so tests can fix it).
    public mutating func nextDelayMillis(random: Double) -> Int64 {
        var base = initialMillis
        for _ in 0..<attempt where base < maximumMillis { base *= factor }
        attempt += 1
        let delay = min(base, maximumMillis) * (1 + jitter * max(-1, min(1, random)))
        return Int64(delay.rounded())
    }

    /// The connection finished connecting: the next loss starts from the first delay again.
    public mutating func reset() { attempt = 0 }
}
