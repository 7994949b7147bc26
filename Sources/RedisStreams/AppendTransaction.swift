import NIOCore
import RedisClient
import ReplicationCore

/// How a writer's publishes are added without passing their rows through Lua: Redis's Lua hashes every byte
/// of a script's arguments, which made ``AppendScript`` most of Redis's work per row (BENCHMARKS.md, "Through
/// Redis"). The entries are plain `XADD`s in a `MULTI`/`EXEC`, and a short script that reads only each key's
/// last token and `rows-added` checks that they are what this hub expects (its ``Tip``): the entries' IDs and
/// `rows-added` were worked out from those. The keys and a guard key are `WATCH`ed first; the check touches
/// the guard when a key is not as expected, so that `EXEC` then adds nothing, and nor does it when another
/// client wrote to a key in between. What is expected is learned from the check's reply, so an aborted
/// transaction is sent again once; what cannot go this way (a row the hub makes itself, a token not after the
/// key's last) goes through ``AppendScript``, which refuses exactly what it must.
enum AppendTransaction {
    /// Bytes of rows a publish has at least to be added this way. The check reads a key's first and last
    /// entries into Lua (up to 32 KiB, hashed as the script's arguments would be) and a transaction is five
    /// commands: for a publish of a few rows the script costs Redis less (BENCHMARKS.md).
    static let minimumBytes = 64 * 1024

    /// A key's newest entry as this hub expects it: the key's last token and the rows added through it.
    struct Tip: Equatable {
        var token: Int64
        var rowsAdded: Int64

        /// How the check script writes it.
        var text: String { "\(token) \(rowsAdded)" }

        init(token: Int64, rowsAdded: Int64) {
            self.token = token
            self.rowsAdded = rowsAdded
        }

        init?(_ text: String) {
            let parts = text.split(separator: " ")
            guard parts.count == 2, let token = Int64(parts[0]), let rows = Int64(parts[1]) else { return nil }
            self.init(token: token, rowsAdded: rows)
        }
    }

    /// KEYS: the keys, then the guard. ARGV: each key's expected tip (`<token> <rows-added>`). Reply: each
    /// key's tip as it is (`?` for a key that is not a stream). Reads a key with `XINFO STREAM`, which hands
    /// the script its first and last entries only, whatever the transaction adds.
    static let checkSource = """
        \(StreamEntries.rowsAddedLua)
        local tips, same = {}, true
        for i = 1, #KEYS - 1 do
          local tip = '0 0'
          local info = redis.pcall('XINFO', 'STREAM', KEYS[i])
          if info.err then
            if redis.call('EXISTS', KEYS[i]) == 1 then tip = '?' end
          else
            local last, entry = '0', false
            for j = 1, #info, 2 do
              if info[j] == 'last-generated-id' then last = string.match(info[j + 1], '^(%d+)') end
              if info[j] == 'last-entry' then entry = info[j + 1] end
            end
            tip = last .. ' ' .. string.format('%d', entry and rows_added(entry) or 0)
          end
          tips[i] = tip
          if tip ~= ARGV[i] then same = false end
        end
        if not same then
          redis.call('INCR', KEYS[#KEYS])
          redis.call('PEXPIRE', KEYS[#KEYS], 60000)
        end
        return tips
        """

    /// One entry of a transaction: its ID's token and `rows-added`.
    struct Planned: Equatable {
        var token: Int64
        var rowsAdded: Int64
    }

    /// The entries of one publish if it can be added this way after `tips` (updated to what it leaves): every
    /// entry has its token, after the key's last. Nil when one has none, when a key's tip is not known, or
    /// when a token is taken (then ``AppendScript`` refuses it in Redis's words).
    static func plan(_ additions: [StreamEntries.Addition], after tips: inout [Tip?]) -> [Planned]? {
        var following = tips
        var planned: [Planned] = []
        for addition in additions {
            guard let token = addition.token, let first = addition.firstToken,
                var tip = following[addition.stream.index], first > tip.token
            else { return nil }
            tip = Tip(token: token, rowsAdded: tip.rowsAdded + Int64(addition.rows))
            following[addition.stream.index] = tip
            planned.append(Planned(token: token, rowsAdded: tip.rowsAdded))
        }
        tips = following
        return planned
    }

    /// The check alone (no transaction follows): each key's tip, for a publish to a key whose tip is not known.
    static func probe(_ streams: [StreamName], entries: StreamEntries, guardKey: String) -> [ByteBuffer] {
        check(streams, expected: streams.map { _ in nil }, entries: entries, guardKey: guardKey)
    }

    private static func check(_ streams: [StreamName], expected: [Tip?], entries: StreamEntries, guardKey: String)
        -> [ByteBuffer]
    {
        let keys = streams.map(entries.key) + [guardKey]
        return RESPCommand.arguments(["EVAL", checkSource, "\(keys.count)"] + keys + expected.map { $0?.text ?? "?" })
    }

    /// The commands of one transaction adding `additions` as `planned`, expecting `tips` of their streams
    /// before: `WATCH`, the check, `MULTI`, the `XADD`s, `EXEC`.
    static func commands(
        _ additions: [StreamEntries.Addition], planned: [Planned], expecting tips: [Tip?], entries: StreamEntries,
        guardKey: String
    ) -> [[ByteBuffer]] {
        let streams = streams(of: additions)
        var commands = [RESPCommand.arguments(["WATCH"] + streams.map(entries.key) + [guardKey])]
        commands.append(check(streams, expected: streams.map { tips[$0.index] }, entries: entries, guardKey: guardKey))
        commands.append(RESPCommand.arguments(["MULTI"]))
        for (addition, entry) in zip(additions, planned) {
            var command = RESPCommand.arguments(
                ["XADD", entries.key(addition.stream), "\(entry.token)-0", addition.field])
            command.append(addition.value)
            command += RESPCommand.arguments([StreamEntries.rowsAddedField, "\(entry.rowsAdded)"])
            commands.append(command)
        }
        commands.append(RESPCommand.arguments(["EXEC"]))
        return commands
    }

    /// The tips a check replied, by stream (nil: not a stream, or a reply that is not the check's).
    static func tips(_ reply: RedisValue, of streams: [StreamName]) -> [StreamName: Tip?] {
        guard case .array(let parts) = reply, parts.count == streams.count else {
            return Dictionary(uniqueKeysWithValues: streams.map { ($0, nil) })
        }
        return Dictionary(uniqueKeysWithValues: zip(streams, parts.map { $0.string.flatMap(Tip.init) }))
    }

    /// The streams a transaction or probe of `additions` checks, in the order of its keys.
    static func streams(of additions: [StreamEntries.Addition]) -> [StreamName] {
        StreamName.all.filter { stream in additions.contains { $0.stream == stream } }
    }

    /// What `EXEC` answered: the tokens added, in order; nil when the transaction was aborted (a key was not
    /// as expected, or changed).
    enum Outcome: Equatable {
        case added([Int64])
        case aborted
        /// An `XADD` refused inside the transaction (the key is not what the check saw) or a reply that is not
        /// `EXEC`'s: the tokens added before the first refusal, and why.
        case failed(added: [Int64], message: String)
    }

    static func outcome(_ reply: RedisValue) -> Outcome {
        switch reply {
        case .null: return .aborted
        case .array(let ids):
            var added: [Int64] = []
            for id in ids {
                guard let token = id.string.flatMap(StreamEntries.token(ofID:)) else {
                    let message = if case .error(let message) = id { message } else { "unexpected reply \(id)" }
                    return .failed(added: added, message: message)
                }
                added.append(token)
            }
            return .added(added)
        default: return .failed(added: [], message: "unexpected reply to EXEC: \(reply)")
        }
    }
}
