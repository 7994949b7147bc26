import NIOCore
import RedisClient
import ReplicationCore
import StreamLog

/// The Lua script that reads a key's entries after a token through another (`XRANGE`), for a catch-up older
/// than the local log, in one step with the check that Redis holds them all: the key reaches `through`, and
/// its first entry is at or just after `after`, or nothing was ever trimmed from it (`entries-added` is its
/// length). Trimming only removes a key's oldest entries, so then no entry after `after` is missing.
///
/// KEYS: the key. ARGV: after, through, count. Reply: `{1, entries}`, or `{0}` when Redis cannot serve it.
enum BackfillScript {
    static let source = """
        local function token(id) return tonumber(string.match(id, '^(%d+)')) end
        local key, after, through = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
        local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
        if #last == 0 or token(last[1][1]) < through then return {0} end
        local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
        if token(first[1][1]) > after + 1 then
          local info = redis.call('XINFO', 'STREAM', key)
          local fields = {}
          for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
          if fields['entries-added'] ~= fields['length'] then return {0} end
        end
        return {1, redis.call('XRANGE', key, '(' .. after .. '-0', '+', 'COUNT', ARGV[3])}
        """

    /// What follows the script (``LuaScript/evaluate(_:sha:)``) in the command that runs it.
    static func arguments(key: String, after: Int64, through: Int64, count: Int) -> [String] {
        ["1", key, "\(after)", "\(through)", "\(count)"]
    }

    /// The catch-up page of a reply: every row after `after` through `through` of its entries as catch-up sends
    /// them, ending at the last entry read, or at `through` once an entry goes past it or fewer than `count`
    /// entries came (the key was read to its end). A run entry is read whole: it may begin at or before `after`
    /// and end after `through` (its ID is its last token), so its rows are taken one by one.
    static func page(_ reply: RedisValue, stream: StreamName, after: Int64, through: Int64, count: Int) -> Result<
        LogPage, StreamLogError
    > {
        guard case .array(let parts) = reply, case .integer(let servable) = parts.first else {
            return .failure(.storage("unexpected reply from Redis: \(reply)"))
        }
        guard servable == 1, parts.count == 2, case .array(let items) = parts[1] else {
            return .failure(.fallenBehind(oldestServable: through))
        }
        var lines = ByteBufferAllocator().buffer(capacity: 0)
        var rowCount = 0
        var last = through
        var readToEnd = items.count < count
        for item in items {
            guard let (id, fields) = StreamEntries.entry(item) else {
                return .failure(.storage("unexpected entry from Redis: \(item)"))
            }
            let batch: NewBatch
            switch StreamEntries.batch(stream: stream, id: id, fields: fields) {
            case .success(let read): batch = read
            case .failure(let error): return .failure(.storage("an entry in Redis is not a batch: \(error)"))
            }
            guard case .exactly(let first) = batch.firstToken, first <= through else {
                readToEnd = true
                break
            }
            switch batch {
            case .rows(_, let rows, .exactly(let token)):
                RowLines.catchUp(rows, stream: stream, token: token, into: &lines)
                rowCount += rows.count
                last = token
            case .run(_, var run, let tokens):
                for token in tokens {
                    let length = run.readableBytesView.firstIndex(of: UInt8(ascii: "\n"))! + 1 - run.readerIndex
                    var line = run.readSlice(length: length)!
                    guard token > after, token <= through else { continue }
                    lines.writeBuffer(&line)
                    rowCount += 1
                }
                last = min(tokens[tokens.count - 1], through)
            case .advance(_, let token, _):
                last = token
            default:
                return .failure(.storage("unexpected entry \(id) in Redis: \(batch)"))
            }
        }
        return .success(
            LogPage(lines: lines, rowCount: rowCount, endToken: readToEnd ? through : last, reachedHead: false))
    }
}
