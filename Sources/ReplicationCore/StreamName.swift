/// A replication stream that this server publishes, with the shape of its rows.
///
/// The set is fixed by the protocol (Synapse 1.6 published these sixteen); the order is the order in which
/// `REPLICATE ALL` subscribes and answers, which real workers see on the wire.
public struct StreamName: Hashable, Sendable, CustomStringConvertible {
    /// The name on the wire.
    public let rawValue: String
    /// How many fields a row of this stream has (the length of its JSON array).
    public let fieldCount: Int
    /// Position in ``all``; lets per-stream state live in plain arrays.
    public let index: Int

    private init(_ rawValue: String, fields: Int, index: Int) {
        self.rawValue = rawValue
        self.fieldCount = fields
        self.index = index
    }

    public var description: String { rawValue }

    public static let events = StreamName("events", fields: 2, index: 0)
    public static let backfill = StreamName("backfill", fields: 6, index: 1)
    public static let presence = StreamName("presence", fields: 7, index: 2)
    public static let typing = StreamName("typing", fields: 2, index: 3)
    public static let receipts = StreamName("receipts", fields: 5, index: 4)
    public static let pushRules = StreamName("push_rules", fields: 1, index: 5)
    public static let pushers = StreamName("pushers", fields: 4, index: 6)
    public static let caches = StreamName("caches", fields: 3, index: 7)
    public static let publicRooms = StreamName("public_rooms", fields: 4, index: 8)
    public static let deviceLists = StreamName("device_lists", fields: 2, index: 9)
    public static let toDevice = StreamName("to_device", fields: 1, index: 10)
    public static let federation = StreamName("federation", fields: 2, index: 11)
    public static let tagAccountData = StreamName("tag_account_data", fields: 3, index: 12)
    public static let accountData = StreamName("account_data", fields: 4, index: 13)
    public static let groups = StreamName("groups", fields: 4, index: 14)
    public static let userSignature = StreamName("user_signature", fields: 1, index: 15)

    /// Every stream, in the order `REPLICATE ALL` answers.
    public static let all: [StreamName] = [
        .events, .backfill, .presence, .typing, .receipts, .pushRules, .pushers, .caches, .publicRooms,
        .deviceLists, .toDevice, .federation, .tagAccountData, .accountData, .groups, .userSignature,
    ]

    private static let byName: [String: StreamName] = Dictionary(uniqueKeysWithValues: all.map { ($0.rawValue, $0) })

    /// The stream with this wire name, or `nil` if the server does not publish it.
    public init?(_ name: some StringProtocol) {
        guard let stream = Self.byName[String(name)] else { return nil }
        self = stream
    }

    public static func == (lhs: StreamName, rhs: StreamName) -> Bool { lhs.index == rhs.index }
    public func hash(into hasher: inout Hasher) { hasher.combine(index) }
}
