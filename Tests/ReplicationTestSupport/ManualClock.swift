import NIOConcurrencyHelpers
import ReplicationNIO

/// A clock that only moves when told to; its wall time can also be stepped alone, as NTP or a suspend
/// would.
public final class ManualClock: Sendable {
    private let millis: NIOLockedValueBox<(monotonic: Int64, wall: Int64)>

    public init(startMillis: Int64 = 1_700_000_000_000) {
        self.millis = NIOLockedValueBox((startMillis, startMillis))
    }

    /// Both times move forward by `delta`.
    public func advance(byMillis delta: Int64) {
        millis.withLockedValue {
            $0.monotonic += delta
            $0.wall += delta
        }
    }

    /// Only the wall time moves (either way).
    public func stepWall(byMillis delta: Int64) { millis.withLockedValue { $0.wall += delta } }

    public var clock: ConnectionClock {
        ConnectionClock(
            monotonic: { self.millis.withLockedValue { $0.monotonic } }, wall: { self.millis.withLockedValue { $0.wall } })
    }
}
