import RedisClient
import ReplicationCore

/// The Lua script that trims what `--retain-rows` and `--retain-age` no longer keep, per key: entries with at
/// least `keep` rows after them (their `rows-added` is at most the newest entry's minus `keep`, so the newest
/// `keep` rows stay, in whole entries, however many rows an entry holds) and at or before the key's `old` ID
/// (old enough, see ``EntryAges``), at most `batch` of them per run. The newest of the trimmable entries is
/// kept: with it in the key, Redis shows that nothing after its token was trimmed, and a catch-up from there
/// can be served from Redis (``BackfillScript``). The oldest entries are read a page at a time, so that a pass
/// with little to trim reads little.
///
/// KEYS: the keys. ARGV: keep, batch, then one `old` ID per key (`+` without an age to keep). Reply: the
/// entries removed, per key.
enum TrimScript {
    static let source = """
        \(StreamEntries.rowsAddedLua)
        local keep, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
        local removed = {}
        for i, key in ipairs(KEYS) do
          removed[i] = 0
          local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
          if newest then
            local through = rows_added(newest) - keep
            local last, seen, from, more = nil, 0, '-', true
            while more and seen < cap do
              local count = math.min(64, cap - seen)
              local page = redis.call('XRANGE', key, from, ARGV[i + 2], 'COUNT', count)
              more = #page == count
              for _, entry in ipairs(page) do
                if rows_added(entry) > through then
                  more = false
                  break
                end
                last, seen = entry[1], seen + 1
              end
              if last then from = '(' .. last end
            end
            if seen > 1 then removed[i] = redis.call('XTRIM', key, 'MINID', last) end
          end
        end
        return removed
        """

    /// `oldThrough`: per key, the last token old enough to go, nil without an age to keep.
    static func arguments(sha: String?, keys: [String], keep: Int, batch: Int, oldThrough: [Int64?]) -> [String] {
        LuaScript.evaluate(source, sha: sha) + ["\(keys.count)"] + keys + ["\(keep)", "\(batch)"]
            + oldThrough.map { token in token.map { "\($0)-0" } ?? "+" }
    }

    /// The entries removed per key, or nil for a reply that is not one.
    static func removed(_ value: RedisValue) -> [Int64]? {
        guard case .array(let counts) = value else { return nil }
        let removed = counts.compactMap { count -> Int64? in if case .integer(let n) = count { n } else { nil } }
        return removed.count == counts.count ? removed : nil
    }
}

/// How old the entries of each key are: their IDs are tokens, not times, so this remembers the last token
/// of every key as the follower had seen it, at most one sample per 64th of the age. Every entry up to the
/// token seen at least `age` ago is that old; a sidecar up for less than `age` knows of no such entry and
/// trims nothing by age (another sidecar up for longer does).
struct EntryAges {
    let ageMillis: Int64
    private var samples: [(millis: Int64, tokens: [Int64])] = []

    init(ageMillis: Int64) { self.ageMillis = ageMillis }

    mutating func record(tokens: [Int64], at millis: Int64) {
        if let last = samples.last, millis - last.millis < max(ageMillis / 64, 1) { return }
        samples.append((millis, tokens))
        // Only the newest sample at least `age` old is needed of those that old.
        while samples.count > 1, millis - samples[1].millis >= ageMillis { samples.removeFirst() }
    }

    /// The last token of `stream` that is at least `age` old at `millis`: 0 when none is known to be.
    func oldThrough(_ stream: StreamName, at millis: Int64) -> Int64 {
        samples.last { millis - $0.millis >= ageMillis }?.tokens[stream.index] ?? 0
    }
}
