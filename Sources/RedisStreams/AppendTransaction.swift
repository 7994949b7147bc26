import NIOCore
import RedisClient
import ReplicationCore

/// How a writer's large publishes are added without passing their rows through Lua: Redis's Lua hashes every
/// byte of a script's arguments, which made ``AppendScript`` most of Redis's work per row (BENCHMARKS.md,
/// "Through Redis"). The keys are `WATCH`ed, a short script that reads only each key's last token and
/// `rows-added` answers how they are, and the entries, whose IDs and `rows-added` were worked out from what
/// this hub expects (its ``Tip``s), are plain `XADD`s queued after `MULTI`. `EXEC` follows only once the check
/// has answered that every key is as expected, `DISCARD` otherwise; `EXEC` adds nothing either when another
/// client wrote to a key after `WATCH`. The keys' tips are learned from the check, so a publish not added is
/// sent again once; what cannot go this way (a row the hub makes itself, a token not after the key's last)
/// goes through ``AppendScript``, which refuses exactly what it must.
enum AppendTransaction {
    /// Bytes of rows a publish has at least to be added this way. The check reads a key's first and last
    /// entries into Lua (up to 32 KiB, hashed as the script's arguments would be) and a transaction is five
    /// commands: for a publish of a few rows the script costs Redis less (BENCHMARKS.md).
    static let minimumBytes = 64 * 1024

    /// A key's newest entry as this hub expects it: the key's last token and the rows added through it.
    struct Tip: Equatable {
        var token: Int64
        var rowsAdded: Int64

        init(token: Int64, rowsAdded: Int64) {
            self.token = token
            self.rowsAdded = rowsAdded
        }

        /// A tip as the check script writes it: `<token> <rows-added>`.
        init?(_ text: String) {
            let parts = text.split(separator: " ")
            guard parts.count == 2, let token = Int64(parts[0]), let rows = Int64(parts[1]) else { return nil }
            self.init(token: token, rowsAdded: rows)
        }
    }

    /// KEYS: the keys. Reply: each key's tip (`<token> <rows-added>`; `?` for a key that is not a stream).
    /// Reads a key with `XINFO STREAM`, which hands the script its first and last entries only, whatever the
    /// transaction adds.
    static let checkSource = """
        \(StreamEntries.rowsAddedLua)
        local tips = {}
        for i, key in ipairs(KEYS) do
          local tip = '0 0'
          local info = redis.pcall('XINFO', 'STREAM', key)
          if info.err then
            if redis.call('EXISTS', key) == 1 then tip = '?' end
          else
            local last, entry = '0', false
            for j = 1, #info, 2 do
              if info[j] == 'last-generated-id' then last = string.match(info[j + 1], '^(%d+)') end
              if info[j] == 'last-entry' then entry = info[j + 1] end
            end
            tip = last .. ' ' .. string.format('%d', entry and rows_added(entry) or 0)
          end
          tips[i] = tip
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

    /// The check alone: each key's tip, for a publish to a key whose tip is not known.
    static func probe(_ streams: [StreamName], entries: StreamEntries) -> [ByteBuffer] {
        RESPCommand.arguments(["EVAL", checkSource, "\(streams.count)"] + streams.map(entries.key))
    }

    /// The commands of one transaction adding `additions` as `planned`, up to its `EXEC`: `WATCH`, the check,
    /// `MULTI`, the `XADD`s.
    static func commands(_ additions: [StreamEntries.Addition], planned: [Planned], entries: StreamEntries)
        -> [[ByteBuffer]]
    {
        let streams = streams(of: additions)
        var commands = [RESPCommand.arguments(["WATCH"] + streams.map(entries.key))]
        commands.append(probe(streams, entries: entries))
        commands.append(RESPCommand.arguments(["MULTI"]))
        for (addition, entry) in zip(additions, planned) {
            var command = RESPCommand.arguments(
                ["XADD", entries.key(addition.stream), "\(entry.token)-0", addition.field])
            command.append(addition.value)
            command += RESPCommand.arguments([StreamEntries.rowsAddedField, "\(entry.rowsAdded)"])
            commands.append(command)
        }
        return commands
    }

    /// The tips a check replied, by stream (nil: not a stream, or a reply that is not the check's).
    static func tips(_ reply: RedisValue, of streams: [StreamName]) -> [StreamName: Tip?] {
        guard case .array(let parts) = reply, parts.count == streams.count else {
            return Dictionary(uniqueKeysWithValues: streams.map { ($0, nil) })
        }
        return Dictionary(uniqueKeysWithValues: zip(streams, parts.map { $0.string.flatMap(Tip.init) }))
    }

    /// Whether the check found every key of `streams` at the tip expected of it.
    static func asExpected(_ found: [StreamName: Tip?]?, _ expected: [Tip?], of streams: [StreamName]) -> Bool {
        streams.allSatisfy { stream in found?[stream].map { $0 == expected[stream.index] } == true }
    }

    /// What ends a transaction once its check answered: `EXEC` when every key was as expected, `DISCARD`.
    static func ending(asExpected: Bool) -> [ByteBuffer] { RESPCommand.arguments([asExpected ? "EXEC" : "DISCARD"]) }

    /// The streams a transaction or probe of `additions` checks, in the order of its keys.
    static func streams(of additions: [StreamEntries.Addition]) -> [StreamName] {
        StreamName.all.filter { stream in additions.contains { $0.stream == stream } }
    }

    /// What a transaction did: the tokens added, in order, or nothing (a key was not as expected, or changed).
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
