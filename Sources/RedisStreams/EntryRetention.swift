import RedisClient
import ReplicationCore

/// The Lua script that trims what `--retain-rows` and `--retain-age` no longer keep, per key: entries beyond
/// the newest `keep` (one entry per batch, so at least as many rows) and at or before the key's `old` ID
/// (old enough, see ``EntryAges``), at most `batch` of them per run. The newest of the trimmable entries is
/// kept: with it in the key, Redis shows that nothing after its token was trimmed, and a catch-up from there
/// can be served from Redis (``BackfillScript``).
///
/// KEYS: the keys. ARGV: keep, batch, then one `old` ID per key (`+` without an age to keep). Reply: the
/// entries removed, per key.
enum TrimScript {
    static let source = """
        local removed = {}
        for i, key in ipairs(KEYS) do
          removed[i] = 0
          local excess = redis.call('XLEN', key) - tonumber(ARGV[1])
          if excess > 1 then
            local oldest = redis.call('XRANGE', key, '-', ARGV[i + 2], 'COUNT', math.min(excess, tonumber(ARGV[2])))
            if #oldest > 1 then removed[i] = redis.call('XTRIM', key, 'MINID', oldest[#oldest][1]) end
          end
        end
        return removed
        """

    /// `oldThrough`: per key, the last token old enough to go, nil without an age to keep.
    static func arguments(keys: [String], keep: Int, batch: Int, oldThrough: [Int64?]) -> [String] {
        ["EVAL", source, "\(keys.count)"] + keys + ["\(keep)", "\(batch)"]
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
