import RedisClient

/// How the Lua scripts are run: by SHA-1 once Redis has them, so that a script is not sent whole with every
/// call. Redis forgets its scripts on `SCRIPT FLUSH` or a restart: a call then fails with `NOSCRIPT`, and the
/// scripts are loaded again.
enum LuaScript {
    /// The start of a command running `source`: `EVALSHA` once `SCRIPT LOAD` has answered its SHA-1, `EVAL`
    /// with the whole source before.
    static func evaluate(_ source: String, sha: String?) -> [String] {
        sha.map { ["EVALSHA", $0] } ?? ["EVAL", source]
    }

    /// Whether Redis refused a call by SHA-1 because it no longer has the script.
    static func isNotLoaded(_ error: any Error) -> Bool {
        if case RedisError.server(let message) = error { message.hasPrefix("NOSCRIPT") } else { false }
    }
}
