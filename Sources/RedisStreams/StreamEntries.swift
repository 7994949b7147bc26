import NIOCore
import RedisClient
import ReplicationCore
import StreamLog

/// How batches are kept in Redis: one stream key per replication stream, one entry per batch with the
/// ID `<token>-0` (Redis refuses an ID that is not after the key's last one: that is what makes a token
/// taken once across every host). The entry holds the batch's rows, each followed by `\n`, in its `rows`
/// field, or an empty `position` field for a writer's `POSITION` without rows. A writer's consecutive
/// one-row batches (a run) are entries of up to ``runEntryBytes`` each, under their last token, holding the
/// writer's `RDATA` lines in a `run` field: one entry per row cost Redis, and every sidecar reading it, a
/// command and a stored batch per row. The append script refuses a run entry whose first token is taken.
/// Every entry also has a `rows-added` field, the rows added to its key through it, counted by the append
/// script: what trimming keeps is measured in rows (``TrimScript``).
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

    /// Bytes of a writer's lines one run entry holds (the line that reaches it is the entry's last): large
    /// enough that Redis's work per entry is spread over a hundred rows, small enough that one `XREAD` of
    /// ``RedisStreamsConfiguration/readCount`` entries stays a few MiB.
    public static let runEntryBytes = 16 * 1024

    /// The field counting the rows added to a key through an entry.
    static let rowsAddedField = "rows-added"

    /// Lua: `rows_added(entry)`, the `rows-added` of an entry as `XRANGE` returns it; 0 for an entry written
    /// without one (before rows were counted), which then counts as older than every row counted since.
    static let rowsAddedLua = """
        local function rows_added(entry)
          local fields = entry[2]
          for i = 1, #fields - 1, 2 do
            if fields[i] == '\(rowsAddedField)' then return tonumber(fields[i + 1]) end
          end
          return 0
        end
        """

    /// One entry to add: the ID (nil: the stream's next token, chosen by Redis), the first token it takes
    /// (a run entry's tokens are all taken by it), its field and value, and the rows it holds.
    public struct Addition: Sendable, Equatable {
        public var stream: StreamName
        public var token: Int64?
        public var firstToken: Int64?
        public var field: String
        public var value: ByteBuffer
        public var rows: Int

        init(
            stream: StreamName, token: Int64?, firstToken: Int64? = nil, field: String, value: ByteBuffer, rows: Int
        ) {
            self.stream = stream
            self.token = token
            self.firstToken = firstToken ?? token
            self.field = field
            self.value = value
            self.rows = rows
        }
    }

    /// The entries of one batch: a run's lines are cut into entries of about ``runEntryBytes``. A batch that
    /// forgets what came before has no place in a shared log (only a relay makes one).
    public static func additions(of batch: NewBatch) -> [Addition]? {
        switch batch {
        case .rows(let stream, let rows, let token):
            let tokenValue: Int64? = if case .exactly(let value) = token { value } else { nil }
            return [Addition(stream: stream, token: tokenValue, field: "rows", value: rows.bytes, rows: rows.count)]
        case .run(let stream, let lines, let tokens):
            var additions: [Addition] = []
            var entryStart = 0
            var firstRow = 0
            lines.withUnsafeReadableBytes { bytes in
                while entryStart < bytes.count {
                    // The line that reaches `runEntryBytes` is the entry's last.
                    let end = bytes.newline(from: min(entryStart + runEntryBytes, bytes.count) - 1) + 1
                    let rows = bytes.newlines(in: entryStart..<end)
                    additions.append(
                        Addition(
                            stream: stream, token: tokens[firstRow + rows - 1], firstToken: tokens[firstRow],
                            field: "run",
                            value: lines.getSlice(at: lines.readerIndex + entryStart, length: end - entryStart)!,
                            rows: rows))
                    entryStart = end
                    firstRow += rows
                }
            }
            precondition(firstRow == tokens.count)
            return additions
        case .advance(let stream, let token, false):
            return [Addition(stream: stream, token: token, field: "position", value: ByteBuffer(), rows: 0)]
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
        guard let (field, value) = content(fields) else {
            return .failure(EntryError("entry \(id) does not have exactly one field besides \(rowsAddedField)"))
        }
        switch field {
        case "position" where value.readableBytes == 0:
            return .success(.advance(stream, to: token, forgettingEarlier: false))
        case "rows" where value.readableBytesView.last == UInt8(ascii: "\n"):
            let count = value.withUnsafeReadableBytes { $0.newlines(in: 0..<$0.count) }
            return .success(.rows(stream, RowTexts(bytes: value, count: count), token: .exactly(token)))
        case "run":
            guard let tokens = runTokens(value, stream: stream), tokens.last == token else {
                return .failure(EntryError("entry \(id) is not a run of RDATA \(stream) lines ending at its token"))
            }
            return .success(.run(stream, lines: value, tokens: tokens))
        default:
            return .failure(EntryError("entry \(id) has an unknown field '\(field)' or a malformed value"))
        }
    }

    /// The one field of an entry that holds its batch, and its value: the fields but `rows-added`. The value
    /// is a slice of the reply's bytes, stored as it is.
    private static func content(_ fields: [RedisValue]) -> (field: String, value: ByteBuffer)? {
        guard fields.count == 2 || (fields.count == 4 && fields[2].string == rowsAddedField),
            let field = fields[0].string, let value = fields[1].buffer
        else { return nil }
        return (field, value)
    }

    /// The first token of a run entry (its ID is its last), read from its first line; nil for another entry.
    static func firstRunToken(fields: [RedisValue]) -> Int64? {
        guard let (field, value) = content(fields), field == "run" else { return nil }
        return value.withUnsafeReadableBytes { CatchUpLines.firstToken(in: $0) }
    }

    /// The tokens of a run entry's lines, each `RDATA <stream> <token> <row>\n` with a row and tokens
    /// strictly increasing; nil if a line is not.
    static func runTokens(_ lines: ByteBuffer, stream: StreamName) -> [Int64]? {
        guard lines.readableBytesView.last == UInt8(ascii: "\n") else { return nil }
        var tokens: [Int64] = []
        var isRun = true
        lines.withUnsafeReadableBytes { bytes in
            CatchUpLines.forEach(of: bytes) { name, token, row in
                guard isRun, let token, token > (tokens.last ?? 0), !row.isEmpty,
                    StreamName(utf8: name) == stream
                else {
                    isRun = false
                    return
                }
                tokens.append(token)
            }
        }
        return isRun && !tokens.isEmpty ? tokens : nil
    }

    /// `XREAD` arguments that read every stream after its entry ID in `ids`; without `blockMillis`, an
    /// answer comes at once, nil when there is nothing.
    public func readCommand(after ids: [String], count: Int, blockMillis: Int?) -> [String] {
        ["XREAD", "COUNT", "\(count)"] + (blockMillis.map { ["BLOCK", "\($0)"] } ?? []) + ["STREAMS"]
            + StreamName.all.map(key) + ids
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

extension UnsafeRawBufferPointer {
    /// The index of the first newline at or after `start`, in lines that end with one.
    fileprivate func newline(from start: Int) -> Int { firstIndex(of: UInt8(ascii: "\n"), in: start..<count)! }

    /// How many newlines `range` holds, counted with `memchr`: cutting a publish's run into entries line by line,
    /// a byte at a time, was half of the publishing sidecar's time.
    fileprivate func newlines(in range: Range<Int>) -> Int {
        var count = 0
        var start = range.lowerBound
        while let found = firstIndex(of: UInt8(ascii: "\n"), in: start..<range.upperBound) {
            count += 1
            start = found + 1
        }
        return count
    }
}
