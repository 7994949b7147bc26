/// Why a line did not become a command. Each case knows the exact `ERROR` text Synapse 1.6 sent for it.
public enum LineError: Error, Equatable, Sendable {
    /// The command is unknown, or may not be received by this side.
    case invalidCommand(name: String)
    /// The arguments did not parse; `reason` is the repr of the exception Synapse would have raised.
    case unparsable(name: CommandName, reason: String, rest: String)
    /// The bytes are not UTF-8; the offset of the first bad byte in the line.
    case invalidUTF8(byteOffset: Int)

    /// The text after `ERROR ` that tells the peer what was wrong.
    public var errorText: String {
        switch self {
        case .invalidCommand(let name):
            "invalid command: \(name)"
        case .unparsable(let name, let reason, let rest):
            "failed to parse line for  \(pythonRepr(name.rawValue)): \(reason) (\(pythonRepr(rest))):"
        case .invalidUTF8(let offset):
            "failed to parse line: "
                + pythonExceptionRepr("UnicodeDecodeError", "'utf-8' codec can't decode the byte at position \(offset)")
        }
    }
}

/// Parsing and encoding of lines (without their `\n`), byte-compatible with Synapse 1.6.
public enum CommandCodec {
    /// Splits a line into its command name and the rest, at the first space.
    /// A line without a space is a command with an empty argument.
    public static func split(_ line: Substring) -> (name: Substring, rest: Substring) {
        guard let space = line.utf8.firstIndex(of: UInt8(ascii: " ")) else { return (line, line[line.endIndex...]) }
        return (line[..<space], line[line.index(after: space)...])
    }

    /// Parses the arguments of a command whose name has already been accepted.
    public static func parse(_ name: CommandName, rest: Substring) -> Result<Command, LineError> {
        do throws(ArgumentError) {
            return .success(try parseArguments(name, rest))
        } catch {
            return .failure(.unparsable(name: name, reason: error.repr, rest: String(rest)))
        }
    }

    /// The line for a command, without the trailing newline.
    public static func encode(_ command: Command) -> String {
        switch command {
        case .server(let name): "SERVER \(name)"
        case .rdata(let stream, let token, let row): "RDATA \(stream) \(token.wireText) \(row.text)"
        case .position(let stream, let token): "POSITION \(stream) \(token)"
        case .error(let text): "ERROR \(text)"
        case .ping(let text): "PING \(text)"
        case .sync(let text): "SYNC \(text)"
        case .name(let name): "NAME \(name)"
        case .replicate(let stream, .token(let token)): "REPLICATE \(stream) \(token)"
        case .replicate(let stream, .now): "REPLICATE \(stream) NOW"
        case .userSync(let user, let state, let millis): "USER_SYNC \(user) \(state.rawValue) \(millis)"
        case .federationAck(let token): "FEDERATION_ACK \(token)"
        case .removePusher(let app, let key, let user): "REMOVE_PUSHER \(app) \(key) \(user)"
        case .invalidateCache(let function, let keys): "INVALIDATE_CACHE \(function) \(keys)"
        case .userIP(let user, let details): "USER_IP \(user) \(details)"
        case .auth(let secret): "AUTH \(secret)"
        }
    }

    /// An exception as Synapse's parser would have raised it; only its repr reaches the wire.
    struct ArgumentError: Error {
        var repr: String

        static func notEnoughValues(expected: Int, got: Int) -> ArgumentError {
            ArgumentError(
                repr: pythonExceptionRepr("ValueError", "not enough values to unpack (expected \(expected), got \(got))"))
        }
        static func invalidInt(_ text: Substring) -> ArgumentError {
            ArgumentError(repr: pythonExceptionRepr("ValueError", "invalid literal for int() with base 10: \(pythonRepr(text))"))
        }
        static func json(_ error: JSONScanner.SyntaxError) -> ArgumentError {
            ArgumentError(repr: pythonExceptionRepr("JSONDecodeError", error.pythonMessage))
        }
    }

    /// Python's `line.split(" ", parts - 1)` unpacked into exactly `parts` values.
    static func splitArguments(_ rest: Substring, into parts: Int) throws(ArgumentError) -> [Substring] {
        // On UTF-8 bytes: a space is one byte and never part of another character, and this runs for
        // every row a writer sends.
        var pieces: [Substring] = []
        pieces.reserveCapacity(parts)
        var start = rest.startIndex
        var index = start
        let utf8 = rest.utf8
        while pieces.count < parts - 1, let space = utf8[index...].firstIndex(of: UInt8(ascii: " ")) {
            pieces.append(rest[start..<space])
            start = utf8.index(after: space)
            index = start
        }
        pieces.append(rest[start...])
        guard pieces.count == parts else { throw .notEnoughValues(expected: parts, got: pieces.count) }
        return pieces
    }

    static func int(_ text: Substring, clampingOverflow: Bool = false) throws(ArgumentError) -> Int64 {
        guard let value = PythonInt.parse(text, overflow: clampingOverflow ? .clamp : .fail) else {
            throw .invalidInt(text)
        }
        return value
    }

    static func json(_ text: Substring) throws(ArgumentError) -> JSONScanner.TopLevel {
        do throws(JSONScanner.SyntaxError) {
            return try JSONScanner.scan(text)
        } catch {
            throw .json(error)
        }
    }

    private static func parseArguments(_ name: CommandName, _ rest: Substring) throws(ArgumentError) -> Command {
        switch name {
        case .SERVER: return .server(name: String(rest))
        case .ERROR: return .error(String(rest))
        case .PING: return .ping(String(rest))
        case .SYNC: return .sync(String(rest))
        case .NAME: return .name(String(rest))
        case .RDATA:
            let parts = try splitArguments(rest, into: 3)
            let token: RowToken = parts[1] == "batch" ? .batch : .value(try int(parts[1]))
            return .rdata(stream: String(parts[0]), token: token, row: RowJSON(text: String(parts[2]), shape: try json(parts[2])))
        case .POSITION:
            let parts = try splitArguments(rest, into: 2)
            return .position(stream: String(parts[0]), token: try int(parts[1]))
        case .REPLICATE:
            let parts = try splitArguments(rest, into: 2)
            let from: ReplicateFrom =
                parts[1] == "NOW" || parts[1] == "now" ? .now : .token(try int(parts[1], clampingOverflow: true))
            return .replicate(stream: String(parts[0]), from: from)
        case .USER_SYNC:
            let parts = try splitArguments(rest, into: 3)
            guard let state = UserSyncState(rawValue: String(parts[1])) else {
                throw ArgumentError(repr: pythonExceptionRepr("Exception", "Invalid USER_SYNC state \(pythonRepr(parts[1]))"))
            }
            return .userSync(userID: String(parts[0]), state: state, lastSyncMillis: try int(parts[2]))
        case .FEDERATION_ACK:
            return .federationAck(token: try int(rest, clampingOverflow: true))
        case .REMOVE_PUSHER:
            let parts = try splitArguments(rest, into: 3)
            return .removePusher(appID: String(parts[0]), pushKey: String(parts[1]), userID: String(parts[2]))
        case .INVALIDATE_CACHE:
            let parts = try splitArguments(rest, into: 2)
            // Synapse 1.6 took any JSON and failed later on what was not a list of keys; here it would
            // become a `caches` row every worker chokes on.
            guard case .array = try json(parts[1]) else {
                throw ArgumentError(repr: pythonExceptionRepr("ValueError", "INVALIDATE_CACHE keys must be a JSON array"))
            }
            return .invalidateCache(cacheFunction: String(parts[0]), keysJSON: String(parts[1]))
        case .USER_IP:
            let parts = try splitArguments(rest, into: 2)
            // Synapse unpacked the JSON into five values.
            guard case .array(let count) = try json(parts[1]) else {
                throw ArgumentError(repr: pythonExceptionRepr("ValueError", "USER_IP details must be a JSON array"))
            }
            if count < 5 { throw .notEnoughValues(expected: 5, got: count) }
            if count > 5 { throw ArgumentError(repr: pythonExceptionRepr("ValueError", "too many values to unpack (expected 5)")) }
            return .userIP(userID: String(parts[0]), detailsJSON: String(parts[1]))
        case .AUTH:
            return .auth(secret: String(rest))
        }
    }
}

extension RowToken {
    /// The token as it is written in `RDATA`: the number, or `batch`.
    public var wireText: String {
        switch self {
        case .value(let token): String(token)
        case .batch: "batch"
        }
    }
}

extension CommandCodec {
    /// The line for a command if it fits `maxLength` bytes. An `ERROR` that would not fit is shortened
    /// (it only informs); any other command that does not fit is never written.
    public static func line(for command: Command, maxLength: Int) -> String? {
        let line = encode(command)
        guard line.utf8.count > maxLength else { return line }
        guard case .error = command else { return nil }
        // Cut on a scalar boundary: back up to the last byte that does not continue a scalar.
        var end = line.utf8.index(line.utf8.startIndex, offsetBy: maxLength)
        while line.utf8[end] & 0xC0 == 0x80 { end = line.utf8.index(before: end) }
        return String(line.utf8[..<end])!
    }
}
