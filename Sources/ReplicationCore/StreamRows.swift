/// Rows the log has accepted, as live fan-out sends them. `Lines` is the transport's bytes (the core
/// imports no I/O): `RDATA` lines, `batch` on every row of a batch but the last.
public struct StreamBatch<Lines: Sendable>: Sendable {
    public let stream: StreamName
    /// The stream's token before these rows; a subscriber whose cursor is behind it missed something.
    public let previousToken: Int64
    public let token: Int64
    public let rowCount: Int
    /// Empty when a writer only advanced the stream's position.
    public let liveLines: Lines

    public init(stream: StreamName, previousToken: Int64, token: Int64, rowCount: Int, liveLines: Lines) {
        self.stream = stream
        self.previousToken = previousToken
        self.token = token
        self.rowCount = rowCount
        self.liveLines = liveLines
    }
}

/// One page of catch-up: rows after a token, each line with its own numeric token, bounded in bytes.
public struct CatchUpPage<Lines: Sendable>: Sendable {
    /// `RDATA` lines, ready to write.
    public var lines: Lines
    public var rowCount: Int
    /// The token the reader's cursor moves to once these lines are written.
    public var endToken: Int64
    /// Whether `endToken` is the stream's current token (nothing more to read).
    public var reachedHead: Bool

    public init(lines: Lines, rowCount: Int, endToken: Int64, reachedHead: Bool) {
        self.lines = lines
        self.rowCount = rowCount
        self.endToken = endToken
        self.reachedHead = reachedHead
    }
}

/// What a read of the log (or a fetch of older rows) came back with.
public enum PageRead<Lines: Sendable>: Sendable {
    case page(CatchUpPage<Lines>)
    /// The rows after the requested token are no longer (or were never) in the log.
    case fallenBehind(oldestServable: Int64)
    case failed(String)
}

/// `POSITION <stream> <token>`, as a value: what a writer's acknowledgement says.
public struct StreamPosition: Equatable, Sendable {
    public var stream: StreamName
    public var token: Int64

    public init(_ stream: StreamName, _ token: Int64) {
        self.stream = stream
        self.token = token
    }
}
