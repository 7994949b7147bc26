/// The replication bus of today's Synapse (1.13 and later): every process publishes commands to a Redis
/// channel named after the server, `USER_IP` to `<server_name>/USER_IP`. One message is one command, as
/// `"<NAME> <arguments>"` without a newline. Unlike the 2019 TCP protocol, rows and positions name the
/// instance that wrote them, and stream names are whatever the writers use (this side keeps them as text).
public enum BusCommand: Sendable, Equatable {
    /// A row; `token` is nil for `batch` rows, which wait for the row with the numeric token.
    case rdata(stream: String, instance: String, token: Int64?, row: String)
    /// `instance` wrote nothing on `stream` between `previousToken` and `newToken`.
    case position(stream: String, instance: String, previousToken: Int64, newToken: Int64)
    /// Every process answers with `POSITION` for the streams it writes.
    case replicate
    case userSync(instance: String, userID: String, deviceID: String?, syncing: Bool, lastSyncMillis: Int64)
    case clearUserSync(instance: String)
    case federationAck(instance: String, token: Int64)
    /// `details` is the JSON array `[access_token, ip, user_agent, device_id, last_seen]`, kept as sent.
    case userIP(userID: String, details: String)
    case remoteServerUp(server: String)
    case lockReleased(instance: String, lockName: String, lockKey: String)
    case newActiveTask(id: String)
    case cancelTask(id: String)

    public var name: BusCommandName {
        switch self {
        case .rdata: .RDATA
        case .position: .POSITION
        case .replicate: .REPLICATE
        case .userSync: .USER_SYNC
        case .clearUserSync: .CLEAR_USER_SYNC
        case .federationAck: .FEDERATION_ACK
        case .userIP: .USER_IP
        case .remoteServerUp: .REMOTE_SERVER_UP
        case .lockReleased: .LOCK_RELEASED
        case .newActiveTask: .NEW_ACTIVE_TASK
        case .cancelTask: .CANCEL_TASK
        }
    }

    /// The message as Synapse publishes it (its `NAME + " " + to_line()`).
    public var message: String {
        let arguments: String
        switch self {
        case .rdata(let stream, let instance, let token, let row):
            arguments = "\(stream) \(instance) \(token.map(String.init) ?? "batch") \(row)"
        case .position(let stream, let instance, let previousToken, let newToken):
            arguments = "\(stream) \(instance) \(previousToken) \(newToken)"
        case .replicate: arguments = ""
        case .userSync(let instance, let userID, let deviceID, let syncing, let lastSyncMillis):
            arguments = "\(instance) \(userID) \(deviceID ?? "None") \(syncing ? "start" : "end") \(lastSyncMillis)"
        case .clearUserSync(let instance): arguments = instance
        case .federationAck(let instance, let token): arguments = "\(instance) \(token)"
        case .userIP(let userID, let details): arguments = "\(userID) \(details)"
        case .remoteServerUp(let server): arguments = server
        case .lockReleased(let instance, let lockName, let lockKey):
            arguments = "[" + [instance, lockName, lockKey].map(JSONText.string).joined(separator: ",") + "]"
        case .newActiveTask(let id): arguments = id
        case .cancelTask(let id): arguments = id
        }
        return "\(name.rawValue) \(arguments)"
    }

    /// The Redis channel Synapse publishes this command on.
    public func channel(serverName: String) -> String {
        name == .USER_IP ? serverName + "/USER_IP" : serverName
    }

    /// Parses one message. Never traps: anything Synapse would refuse (and any command it added later)
    /// comes back as the reason to count it under.
    public static func parse(_ message: [UInt8]) -> Result<BusCommand, BusMalformedReason> {
        guard let text = String(validating: message, as: UTF8.self) else { return .failure(.invalidUTF8) }
        guard !text.isEmpty else { return .failure(.empty) }
        let name: Substring
        let rest: Substring
        if let space = text.firstIndex(of: " ") {
            name = text[..<space]
            rest = text[text.index(after: space)...]
        } else {
            name = text[...]
            rest = ""
        }
        guard let known = BusCommandName(rawValue: String(name)) else { return .failure(.unknownCommand) }
        do throws(BusMalformedReason) {
            return .success(try parse(known, rest))
        } catch {
            return .failure(error)
        }
    }

    private static func parse(_ name: BusCommandName, _ rest: Substring) throws(BusMalformedReason) -> BusCommand {
        switch name {
        case .RDATA:
            let parts = split(rest, maxSplits: 3)
            guard parts.count == 4 else { throw .missingArguments }
            let token: Int64?
            if parts[2] == "batch" {
                token = nil
            } else {
                token = try integer(parts[2])
            }
            try checkJSON(parts[3])
            return .rdata(stream: String(parts[0]), instance: String(parts[1]), token: token, row: String(parts[3]))
        case .POSITION:
            let parts = split(rest, maxSplits: 3)
            guard parts.count == 4 else { throw .missingArguments }
            return .position(
                stream: String(parts[0]), instance: String(parts[1]), previousToken: try integer(parts[2]),
                newToken: try integer(parts[3]))
        case .REPLICATE:
            return .replicate
        case .USER_SYNC:
            let parts = split(rest, maxSplits: 4)
            guard parts.count == 5 else { throw .missingArguments }
            guard parts[3] == "start" || parts[3] == "end" else { throw .badUserSyncState }
            return .userSync(
                instance: String(parts[0]), userID: String(parts[1]),
                deviceID: parts[2] == "None" ? nil : String(parts[2]), syncing: parts[3] == "start",
                lastSyncMillis: try integer(parts[4]))
        case .CLEAR_USER_SYNC:
            return .clearUserSync(instance: String(rest))
        case .FEDERATION_ACK:
            let parts = rest.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw .missingArguments }
            return .federationAck(instance: String(parts[0]), token: try integer(parts[1]))
        case .USER_IP:
            let parts = split(rest, maxSplits: 1)
            guard parts.count == 2 else { throw .missingArguments }
            guard case .array(count: 5) = try scanJSON(parts[1]) else { throw .badJSON }
            return .userIP(userID: String(parts[0]), details: String(parts[1]))
        case .REMOTE_SERVER_UP:
            return .remoteServerUp(server: String(rest))
        case .LOCK_RELEASED:
            guard let strings = JSONStringArray.decode(rest), strings.count == 3 else { throw .badJSON }
            return .lockReleased(instance: strings[0], lockName: strings[1], lockKey: strings[2])
        case .NEW_ACTIVE_TASK:
            return .newActiveTask(id: String(rest))
        case .CANCEL_TASK:
            return .cancelTask(id: String(rest))
        }
    }

    /// Python's `line.split(" ", maxSplits)`: empty parts are kept.
    private static func split(_ text: Substring, maxSplits: Int) -> [Substring] {
        text.split(separator: " ", maxSplits: maxSplits, omittingEmptySubsequences: false)
    }

    private static func integer(_ text: Substring) throws(BusMalformedReason) -> Int64 {
        guard let value = Int64(text) else { throw .badToken }
        return value
    }

    private static func scanJSON(_ text: Substring) throws(BusMalformedReason) -> JSONScanner.TopLevel {
        do {
            return try JSONScanner.scan(text)
        } catch {
            throw .badJSON
        }
    }

    private static func checkJSON(_ text: Substring) throws(BusMalformedReason) { _ = try scanJSON(text) }
}

/// The commands of the bus, in the order metrics list them.
public enum BusCommandName: String, CaseIterable, Sendable {
    case RDATA, POSITION, REPLICATE, USER_SYNC, CLEAR_USER_SYNC, FEDERATION_ACK, USER_IP, REMOTE_SERVER_UP
    case LOCK_RELEASED, NEW_ACTIVE_TASK, CANCEL_TASK
}

/// Why a message on the bus was not a command this side understands; the metrics label.
public enum BusMalformedReason: String, Error, CaseIterable, Sendable {
    case invalidUTF8 = "invalid_utf8"
    case empty
    /// A command this side does not know: one Synapse added later, or one that has no business on the bus.
    case unknownCommand = "unknown_command"
    case missingArguments = "missing_arguments"
    case badToken = "bad_token"
    case badJSON = "bad_json"
    case badUserSyncState = "bad_user_sync_state"
}

/// Decodes a JSON array of strings (`LOCK_RELEASED`'s argument); nil for anything else.
enum JSONStringArray {
    static func decode(_ text: Substring) -> [String]? {
        var scalars = text.unicodeScalars[...]
        func skipSpace() {
            while let first = scalars.first, first == " " || first == "\t" || first == "\n" || first == "\r" {
                scalars.removeFirst()
            }
        }
        func take(_ scalar: Unicode.Scalar) -> Bool {
            skipSpace()
            guard scalars.first == scalar else { return false }
            scalars.removeFirst()
            return true
        }
        guard take("[") else { return nil }
        var strings: [String] = []
        if !take("]") {
            repeat {
                skipSpace()
                guard let string = decodeString(&scalars) else { return nil }
                strings.append(string)
            } while take(",")
            guard take("]") else { return nil }
        }
        skipSpace()
        return scalars.isEmpty ? strings : nil
    }

    private static func decodeString(_ scalars: inout Substring.UnicodeScalarView.SubSequence) -> String? {
        guard scalars.popFirst() == "\"" else { return nil }
        var result = String.UnicodeScalarView()
        var pendingHighSurrogate: UInt32?
        while let scalar = scalars.popFirst() {
            switch scalar {
            case "\"":
                return pendingHighSurrogate == nil ? String(result) : nil
            case "\\":
                guard let escape = scalars.popFirst() else { return nil }
                if escape == "u" {
                    let digits = String(String.UnicodeScalarView(scalars.prefix(4)))
                    guard digits.count == 4, let unit = UInt32(digits, radix: 16) else { return nil }
                    scalars.removeFirst(4)
                    if let high = pendingHighSurrogate {
                        guard (0xDC00...0xDFFF).contains(unit) else { return nil }
                        pendingHighSurrogate = nil
                        result.append(Unicode.Scalar(0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00))!)
                    } else if (0xD800...0xDBFF).contains(unit) {
                        pendingHighSurrogate = unit
                    } else {
                        guard let decoded = Unicode.Scalar(unit) else { return nil }
                        result.append(decoded)
                    }
                    continue
                }
                guard pendingHighSurrogate == nil else { return nil }
                switch escape {
                case "\"": result.append("\"")
                case "\\": result.append("\\")
                case "/": result.append("/")
                case "b": result.append("\u{08}")
                case "f": result.append("\u{0C}")
                case "n": result.append("\n")
                case "r": result.append("\r")
                case "t": result.append("\t")
                default: return nil
                }
            default:
                guard pendingHighSurrogate == nil, scalar.value >= 0x20 else { return nil }
                result.append(scalar)
            }
        }
        return nil
    }
}
