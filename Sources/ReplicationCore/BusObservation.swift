/// What an observer has learned from the bus: positions and rows per stream and writing instance, commands,
/// when each instance was last heard, gaps, syncing users and malformed messages. Pure state: the caller
/// feeds it messages with the time they arrived.
public struct BusObservation: Sendable {
    /// One writer of one stream.
    public struct Writer: Hashable, Comparable, Sendable {
        public var stream: String
        public var instance: String

        public init(stream: String, instance: String) {
            self.stream = stream
            self.instance = instance
        }

        public static func < (lhs: Writer, rhs: Writer) -> Bool {
            (lhs.stream, lhs.instance) < (rhs.stream, rhs.instance)
        }
    }

    public struct WriterState: Sendable, Equatable {
        /// The highest token seen from this writer (an `RDATA` token or a `POSITION`'s new token).
        public var position: Int64?
        public var rows = 0
        /// `POSITION`s whose previous token was beyond `position`: rows written that this observer never saw.
        public var gaps = 0

        public init(position: Int64? = nil, rows: Int = 0, gaps: Int = 0) {
            self.position = position
            self.rows = rows
            self.gaps = gaps
        }
    }

    /// Upper bounds of the message size histogram, in bytes.
    public static let sizeBuckets: [Int] = [64, 128, 256, 512, 1024, 2048, 4096, 16384, 65536]

    public private(set) var writers: [Writer: WriterState] = [:]
    /// Per ``BusCommandName`` (in `allCases` order).
    public private(set) var commands = [Int](repeating: 0, count: BusCommandName.allCases.count)
    /// Per ``BusMalformedReason`` (in `allCases` order).
    public private(set) var malformed = [Int](repeating: 0, count: BusMalformedReason.allCases.count)
    public private(set) var lastSeenMillis: [String: Int64] = [:]
    /// Per instance, the users (and devices) it reported as syncing.
    public private(set) var syncing: [String: Set<String>] = [:]
    /// Messages per size bucket (one more than ``sizeBuckets``: the last counts the larger ones).
    public private(set) var sizeCounts = [Int](repeating: 0, count: BusObservation.sizeBuckets.count + 1)
    public private(set) var sizeSum = 0

    public init() {}

    /// Takes one message in; what it parsed to, or why it was not understood (counted either way).
    @discardableResult
    public mutating func observe(_ message: [UInt8], atMillis now: Int64) -> Result<BusCommand, BusMalformedReason> {
        sizeCounts[Self.sizeBuckets.firstIndex { message.count <= $0 } ?? Self.sizeBuckets.count] += 1
        sizeSum += message.count
        let parsed = BusCommand.parse(message)
        switch parsed {
        case .failure(let reason):
            malformed[BusMalformedReason.allCases.firstIndex(of: reason)!] += 1
        case .success(let command):
            commands[BusCommandName.allCases.firstIndex(of: command.name)!] += 1
            apply(command, now: now)
        }
        return parsed
    }

    private mutating func apply(_ command: BusCommand, now: Int64) {
        switch command {
        case .rdata(let stream, let instance, let token, _):
            seen(instance, now)
            let writer = Writer(stream: stream, instance: instance)
            writers[writer, default: WriterState()].rows += 1
            if let token { advance(writer, to: token) }
        case .position(let stream, let instance, let previousToken, let newToken):
            seen(instance, now)
            let writer = Writer(stream: stream, instance: instance)
            if let known = writers[writer]?.position, previousToken > known { writers[writer]!.gaps += 1 }
            advance(writer, to: newToken)
        case .userSync(let instance, let userID, let deviceID, let syncing, _):
            seen(instance, now)
            let user = userID + " " + (deviceID ?? "None")
            if syncing {
                self.syncing[instance, default: []].insert(user)
            } else {
                self.syncing[instance, default: []].remove(user)
            }
        case .clearUserSync(let instance):
            seen(instance, now)
            syncing[instance] = []
        case .federationAck(let instance, _), .lockReleased(let instance, _, _):
            seen(instance, now)
        case .replicate, .userIP, .remoteServerUp, .newActiveTask, .cancelTask:
            break
        }
    }

    private mutating func seen(_ instance: String, _ now: Int64) { lastSeenMillis[instance] = now }

    /// Positions only move forward: a writer restarting at an older token must not look like the next gap.
    private mutating func advance(_ writer: Writer, to token: Int64) {
        let current = writers[writer]?.position ?? token
        writers[writer, default: WriterState()].position = max(current, token)
    }
}
