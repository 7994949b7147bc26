import NIOCore
import RedisClient
import ReplicationCore
import StreamLog

/// How batches are kept in Redis: one stream key per replication stream, one entry per token with the
/// ID `<token>-0` (Redis refuses an ID that is not after the key's last one: that is what makes a token
/// taken once across every host). The entry holds the batch's rows, each followed by `\n`, in its `rows`
/// field, or an empty `position` field for a writer's `POSITION` without rows.
public struct StreamEntries: Sendable {
    /// Prefix of every key: the default's hash tag keeps a deployment's keys on one Redis Cluster slot,
    /// so that one `XREAD` covers them all.
    public let prefix: String

    public init(prefix: String) { self.prefix = prefix }

    public static func defaultPrefix(serverName: String) -> String { "replication-sidecar:{\(serverName)}:" }

    public func key(_ stream: StreamName) -> String { prefix + stream.rawValue }

    /// The stream a key read back names, if it is one of ours.
    public func stream(ofKey key: String) -> StreamName? {
        guard key.hasPrefix(prefix) else { return nil }
        let name = key.dropFirst(prefix.count)
        return StreamName.all.first { $0.rawValue == name }
    }

    /// One entry to add: the ID (nil: the stream's next token, chosen by Redis) and its field and value.
    public struct Addition: Sendable, Equatable {
        public var stream: StreamName
        public var token: Int64?
        public var field: String
        public var value: [UInt8]
    }

    /// The entries of one batch: a run's rows are one entry per token (each is its own batch on the wire).
    /// A batch that forgets what came before has no place in a shared log (only a relay makes one).
    public static func additions(of batch: NewBatch) -> [Addition]? {
        switch batch {
        case .rows(let stream, let rows, let token):
            var bytes = rows.bytes
            let tokenValue: Int64? = if case .exactly(let value) = token { value } else { nil }
            return [
                Addition(
                    stream: stream, token: tokenValue, field: "rows",
                    value: bytes.readBytes(length: bytes.readableBytes)!)
            ]
        case .run(let stream, _, let tokens):
            var additions: [Addition] = []
            batch.forEachRow(storedAt: 0) { token, _, row in
                additions.append(
                    Addition(stream: stream, token: token, field: "rows", value: Array(row) + [UInt8(ascii: "\n")]))
            }
            precondition(additions.count == tokens.count)
            return additions
        case .advance(let stream, let token, false):
            return [Addition(stream: stream, token: token, field: "position", value: [])]
        case .advance(_, _, true):
            return nil
        }
    }

    /// The token an entry ID `<token>-0` stands for.
    public static func token(ofID id: String) -> Int64? {
        guard id.hasSuffix("-0"), let token = Int64(id.dropLast(2)), token > 0 else { return nil }
        return token
    }

    /// The batch an entry read back stands for, or why it is not one of ours.
    public static func batch(stream: StreamName, id: String, fields: [RedisValue]) -> Result<NewBatch, EntryError> {
        guard let token = token(ofID: id) else { return .failure(EntryError("entry ID '\(id)' is not <token>-0")) }
        guard fields.count == 2, let field = fields[0].string, let value = fields[1].bytes else {
            return .failure(EntryError("entry \(id) does not have exactly one field"))
        }
        switch field {
        case "position" where value.isEmpty:
            return .success(.advance(stream, to: token, forgettingEarlier: false))
        case "rows" where value.last == UInt8(ascii: "\n"):
            let count = value.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
            let rows = RowTexts(bytes: ByteBuffer(bytes: value), count: count)
            return .success(.rows(stream, rows, token: .exactly(token)))
        default:
            return .failure(EntryError("entry \(id) has an unknown field '\(field)' or a malformed value"))
        }
    }

    /// `XREAD` arguments that read every stream after the token this hub has stored for it.
    public func readCommand(after tokens: [Int64], count: Int, blockMillis: Int) -> [String] {
        ["XREAD", "COUNT", "\(count)", "BLOCK", "\(blockMillis)", "STREAMS"] + StreamName.all.map(key)
            + StreamName.all.map { "\(tokens[$0.index])-0" }
    }

    /// The entries of an `XREAD` reply, per key in the reply's order, each as its stream, ID and fields.
    public func entries(ofReadReply reply: RedisValue) -> [(StreamName, String, [RedisValue])] {
        guard case .array(let keys) = reply else { return [] }
        var entries: [(StreamName, String, [RedisValue])] = []
        for keyReply in keys {
            guard case .array(let pair) = keyReply, pair.count == 2, let key = pair[0].string,
                let stream = stream(ofKey: key), case .array(let items) = pair[1]
            else { continue }
            for item in items {
                guard let (id, fields) = Self.entry(item) else { continue }
                entries.append((stream, id, fields))
            }
        }
        return entries
    }

    /// One entry of an `XREAD` or `XRANGE` reply: its ID and fields.
    static func entry(_ item: RedisValue) -> (id: String, fields: [RedisValue])? {
        guard case .array(let entry) = item, entry.count == 2, let id = entry[0].string,
            case .array(let fields) = entry[1]
        else { return nil }
        return (id, fields)
    }
}

public struct EntryError: Error, Equatable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
