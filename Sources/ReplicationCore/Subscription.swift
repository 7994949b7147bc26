/// One connection's subscription to one stream: a cursor into the log, not a queue of rows.
///
/// While the connection is writable and the cursor is at the head, new batches go out live. A batch that
/// cannot be written (paused connection) or that does not follow the cursor (a missed batch) turns the
/// subscription to catching up: it then reads from the log after its cursor, page by page, at the pace
/// the connection drains, until it reaches the head. After a `REPLICATE`, reaching the head is announced
/// with `POSITION`. Memory per subscriber stays constant and nothing is dropped for being slow.
public struct Subscription: Sendable, Equatable {
    public enum Phase: Sendable, Equatable {
        /// Reading from the log; `announce` says a `POSITION` is due when the head is reached.
        case catchingUp(announce: Bool)
        case live
    }

    /// What to do with a newly appended batch.
    public enum Delivery: Sendable, Equatable {
        /// Write its live lines; the cursor has moved to its token.
        case write
        /// Nothing to write now (already sent, or the log will be read later).
        case skip
        /// The subscription missed something: read from the log now.
        case catchUp
    }

    /// The last token whose rows were written to the connection.
    public private(set) var cursor: Int64
    public private(set) var phase: Phase
    /// The newest token the log is known to have reached, from the head when subscribing and the batches
    /// offered since: a page read before one of them was committed says it reached the head (the head when
    /// it was read), and still ends before it.
    private var newestKnown: Int64

    /// A subscription from `REPLICATE <stream> <token>`, the log's head being `head`: catch up, then announce.
    public static func replicating(after token: Int64, head: Int64) -> Subscription {
        Subscription(cursor: token, phase: .catchingUp(announce: true), newestKnown: head)
    }

    /// A subscription from `REPLICATE <stream> NOW`: live at the current token (its `POSITION` is sent at once).
    public static func live(at token: Int64) -> Subscription {
        Subscription(cursor: token, phase: .live, newestKnown: token)
    }

    /// A batch `(previousToken, token]` was appended; `canWrite` says whether the connection takes writes now.
    public mutating func offered(previousToken: Int64, token: Int64, canWrite: Bool) -> Delivery {
        newestKnown = max(newestKnown, token)
        guard phase == .live, token > cursor else { return .skip }
        guard canWrite else {
            phase = .catchingUp(announce: false)
            return .skip
        }
        // Only a batch that starts exactly at the cursor is written whole; a gap, or a cursor inside a run
        // of one-row batches, is served from the log, which can start anywhere.
        guard previousToken == cursor else {
            phase = .catchingUp(announce: false)
            return .catchUp
        }
        cursor = token
        return .write
    }

    /// A page of catch-up was written. Returns true when a `POSITION` at the cursor must follow. A page
    /// that reached the head it was read at, but ends before a token known since, is not the head: going
    /// live there would wait forever for a batch that was skipped while catching up.
    public mutating func pageWritten(endToken: Int64, reachedHead: Bool) -> Bool {
        cursor = endToken
        guard reachedHead, newestKnown <= endToken else { return false }
        let announce = phase == .catchingUp(announce: true)
        phase = .live
        return announce
    }

    public var isCatchingUp: Bool { phase != .live }
}
