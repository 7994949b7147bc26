import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Milliseconds since the epoch, read only at the edges so that the protocol rules can be driven by
/// a manual clock in tests.
public struct WallClock: Sendable {
    private let read: @Sendable () -> Int64

    public init(_ read: @escaping @Sendable () -> Int64) {
        self.read = read
    }

    public var nowMillis: Int64 { read() }

    public static let system = WallClock {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}

/// A clock that only moves when told to.
public final class ManualClock: Sendable {
    private let millis: NIOLockedValueBox<Int64>

    public init(startMillis: Int64 = 1_700_000_000_000) {
        self.millis = NIOLockedValueBox(startMillis)
    }

    public func advance(byMillis delta: Int64) { millis.withLockedValue { $0 += delta } }

    public var clock: WallClock { WallClock { self.millis.withLockedValue { $0 } } }
}
