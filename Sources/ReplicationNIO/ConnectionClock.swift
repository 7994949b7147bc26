#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The two times a connection reads, only at the edges so that the protocol rules can be driven by a
/// manual clock in tests: monotonic milliseconds for every timeout (a wall-clock step from NTP or a
/// suspend must neither time out a healthy peer nor keep a dead one), and wall milliseconds for what the
/// protocol carries (a `PING`'s value, a `caches` row's time, when a connection opened).
public struct ConnectionClock: Sendable {
    private let readMonotonic: @Sendable () -> Int64
    private let readWall: @Sendable () -> Int64

    package init(monotonic: @escaping @Sendable () -> Int64, wall: @escaping @Sendable () -> Int64) {
        self.readMonotonic = monotonic
        self.readWall = wall
    }

    /// Milliseconds from an arbitrary start that never goes back: for timeouts only.
    public var monotonicMillis: Int64 { readMonotonic() }
    /// Milliseconds since the epoch: for values sent or shown, never for timeouts.
    public var wallMillis: Int64 { readWall() }

    public static let system = ConnectionClock(
        monotonic: { millis(CLOCK_MONOTONIC) }, wall: { millis(CLOCK_REALTIME) })

    private static func millis(_ clock: clockid_t) -> Int64 {
        var spec = timespec()
        clock_gettime(clock, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}
