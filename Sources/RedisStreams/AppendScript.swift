import NIOCore
import RedisClient
import ReplicationCore

/// The Lua script that adds a publish's entries atomically, in order, stopping at the first one Redis
/// refuses: a writer's batches after a refused one are never kept, as with a local log. An entry without
/// an ID (a row the hub makes itself) takes the token after the key's last one, and after `floor` (this
/// hub's own token, should Redis have lost the key). A run entry takes every token from its first to its
/// ID's: Redis compares only the ID, so the script refuses it, in Redis's words, when the key's last token
/// is not before its first.
///
/// Each entry gets its `rows-added`: the key's newest entry's plus its own rows. A key's last token and
/// `rows-added` are read at most once per run and followed from then on, as the script adds entries: reading
/// the last token per run entry cost Redis as much as the rest of the script, since `XINFO STREAM` hands the
/// script the key's first and last entries whole.
///
/// KEYS: one per entry. ARGV: five per entry: ID or '', the token the key may hold at most before it (the
/// floor for an entry without an ID), field, value, rows. Reply: `{added IDs}`, or `{added IDs, error, the
/// refusing key's last token}`. Nothing is trimmed here: that is ``TrimScript``'s.
enum AppendScript {
    static let source = """
        \(StreamEntries.rowsAddedLua)
        local lasts, totals = {}, {}
        local function last_token(key)
          if lasts[key] == nil then
            lasts[key] = 0
            if redis.call('EXISTS', key) == 1 then
              local info = redis.call('XINFO', 'STREAM', key)
              for i = 1, #info, 2 do
                if info[i] == 'last-generated-id' then lasts[key] = tonumber(string.match(info[i + 1], '^(%d+)')) end
              end
            end
          end
          return lasts[key]
        end
        local function rows_added_through_last(key)
          if totals[key] == nil then
            local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
            totals[key] = last and rows_added(last) or 0
          end
          return totals[key]
        end
        local ids = {}
        for i, key in ipairs(KEYS) do
          local base = (i - 1) * 5
          local id = ARGV[base + 1]
          local after = tonumber(ARGV[base + 2])
          local added
          if id == '' then
            id = string.format('%d-0', math.max(last_token(key), after) + 1)
          elseif tonumber(string.match(id, '^(%d+)')) > after + 1 and last_token(key) > after then
            added = {err = 'ERR The ID specified in XADD is equal or smaller than the target stream top item'}
          end
          if not added then
            local total = rows_added_through_last(key) + tonumber(ARGV[base + 5])
            added = redis.pcall('XADD', key, id, ARGV[base + 3], ARGV[base + 4], '\(StreamEntries.rowsAddedField)', total)
            if type(added) ~= 'table' then lasts[key], totals[key] = tonumber(string.match(added, '^(%d+)')), total end
          end
          if type(added) == 'table' and added.err then return {ids, added.err, last_token(key)} end
          ids[#ids + 1] = added
        end
        return {ids}
        """

    /// The command that runs the script (``LuaScript/evaluate(_:sha:)``).
    static func arguments(
        sha: String?, _ additions: [StreamEntries.Addition], entries: StreamEntries, floors: [Int64]
    ) -> [ByteBuffer] {
        var command = RESPCommand.arguments(LuaScript.evaluate(source, sha: sha) + ["\(additions.count)"])
        command += RESPCommand.arguments(additions.map { entries.key($0.stream) })
        for addition in additions {
            command += RESPCommand.arguments([
                addition.token.map { "\($0)-0" } ?? "",
                "\(addition.firstToken.map { $0 - 1 } ?? floors[addition.stream.index])", addition.field,
            ])
            command.append(addition.value)
            command.append(ByteBuffer(string: "\(addition.rows)"))
        }
        return command
    }

    /// What the script answered: the tokens added, and the refusal that stopped it, if any.
    struct Reply: Equatable {
        var added: [Int64]
        var refusal: (message: String, lastToken: Int64)?

        static func == (a: Reply, b: Reply) -> Bool {
            a.added == b.added && a.refusal?.message == b.refusal?.message
                && a.refusal?.lastToken == b.refusal?.lastToken
        }
    }

    static func reply(_ value: RedisValue) -> Reply? {
        guard case .array(let parts) = value, let first = parts.first, case .array(let ids) = first else { return nil }
        let added = ids.compactMap { $0.string.flatMap(StreamEntries.token(ofID:)) }
        guard added.count == ids.count else { return nil }
        guard parts.count == 3 else { return parts.count == 1 ? Reply(added: added) : nil }
        guard let message = parts[1].string, case .integer(let last) = parts[2] else { return nil }
        return Reply(added: added, refusal: (message, last))
    }
}
