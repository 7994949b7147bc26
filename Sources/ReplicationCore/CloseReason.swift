/// Every way a connection can end. The raw value is the `reason_type` label of the close-reason counter:
/// Twisted's exception names where the case is the same as in Synapse, plain names for the rest.
public enum CloseReason: String, CaseIterable, Sendable {
    /// The peer closed the connection cleanly.
    case connectionDone = "ConnectionDone"
    /// The connection was reset or otherwise lost.
    case connectionLost = "ConnectionLost"
    /// We aborted it: it did not go away within the grace period after we closed it.
    case connectionAborted = "ConnectionAborted"
    case invalidCommand = "invalid_command"
    case parseError = "parse_error"
    case lineTooLong = "line_length_exceeded"
    case pingTimeout = "ping_timeout"
    case failedToKeepUp = "failed_to_keep_up"
    case replicateFailed = "replicate_failed"
    case writerRejected = "writer_rejected"
    case wrongRemote = "wrong_remote"
    case serverShutdown = "server_shutting_down"
    /// A writer's `RDATA`/`POSITION` before its `AUTH` was accepted, or an `AUTH` nobody asked for.
    case notAuthorised = "not_authorised"
    /// A writer's `AUTH` with the wrong secret.
    case authenticationFailed = "authentication_failed"
    /// More `INVALIDATE_CACHE`/`REMOVE_PUSHER` rows than the per-connection rate allows.
    case rateLimited = "rate_limited"
    /// Closed at accept: the peer's address is outside `--allow-from`.
    case notAllowed = "not_allowed"
    /// Closed at accept: `--max-connections` were already open.
    case tooManyConnections = "too_many_connections"
}

/// An `ERROR` we send before closing, with the reason it is counted under.
public struct ClosingError: Error, Equatable, Sendable {
    public var text: String
    public var reason: CloseReason

    public init(_ text: String, reason: CloseReason) {
        self.text = text
        self.reason = reason
    }

    public static let lineTooLong = ClosingError("Line length exceeded", reason: .lineTooLong)
    public static let pingTimeout = ClosingError("ping timeout", reason: .pingTimeout)
    public static let failedToKeepUp = ClosingError("Failed to keep up", reason: .failedToKeepUp)
    public static let serverShutdown = ClosingError("server shutting down", reason: .serverShutdown)
    public static let wrongRemote = ClosingError("Wrong remote", reason: .wrongRemote)
    public static let authenticationFailed = ClosingError("authentication failed", reason: .authenticationFailed)

    /// A writer listed with credentials sent `RDATA` or `POSITION` before a good `AUTH`.
    public static func notAuthorised(_ command: CommandName) -> ClosingError {
        ClosingError("not authorised: send AUTH <secret> after NAME before \(command)", reason: .notAuthorised)
    }

    /// `AUTH` from a connection that is not a writer waiting for it.
    public static let unexpectedAuth = ClosingError(
        "not authorised: AUTH is only for a writer listed with credentials, once, after its first NAME",
        reason: .notAuthorised)

    /// Too many rows asked of the hub (`INVALIDATE_CACHE`, `REMOVE_PUSHER`).
    public static func rateLimited(_ command: CommandName, perSecond: Int) -> ClosingError {
        ClosingError("too many \(command): at most \(perSecond) per second per connection", reason: .rateLimited)
    }

    public static func line(_ error: LineError) -> ClosingError {
        switch error {
        case .invalidCommand: ClosingError(error.errorText, reason: .invalidCommand)
        case .unparsable, .invalidUTF8: ClosingError(error.errorText, reason: .parseError)
        }
    }

    public static func unknownStream(_ stream: String) -> ClosingError {
        ClosingError(
            "failed to handle replicate: " + pythonExceptionRepr("Exception", "unknown stream %s", stream),
            reason: .replicateFailed)
    }

    public static func fallenBehind(_ stream: StreamName) -> ClosingError {
        ClosingError(
            "failed to handle replicate: " + pythonExceptionRepr("Exception", "stream \(stream) has fallen behind"),
            reason: .replicateFailed)
    }

    /// A writer's line that cannot be accepted; says which stream and token, and why.
    public static func writerRejected(_ command: CommandName, stream: String, token: String, _ why: String) -> ClosingError {
        ClosingError("rejected \(command) \(stream) \(token): \(why)", reason: .writerRejected)
    }
}

extension ClosingError {
    /// The log could not serve a `REPLICATE` for another reason than retention.
    public static func replicateFailed(_ stream: StreamName, _ why: String) -> ClosingError {
        ClosingError(
            "failed to handle replicate: " + pythonExceptionRepr("Exception", "stream \(stream): \(why)"),
            reason: .replicateFailed)
    }

    /// A writer's batch whose token is not after the stream's current one, and that does not repeat what the
    /// log stores there: `difference` says how, when the two could be compared.
    public static func tokenNotAfterCurrent(
        _ command: CommandName, stream: StreamName, token: Int64, current: Int64, difference: String? = nil
    ) -> ClosingError {
        writerRejected(
            command, stream: stream.rawValue, token: String(token),
            "token must be greater than the stream's current token \(current)"
                + (difference.map { ", or repeat what is stored: \($0)" } ?? ""))
    }

    /// A writer's batch the log could not store.
    public static func notStored(_ command: CommandName, stream: StreamName, token: Int64, _ why: String) -> ClosingError {
        writerRejected(command, stream: stream.rawValue, token: String(token), notStoredPrefix + why)
    }

    /// How the reason of ``notStored(_:stream:token:_:)`` begins, which ``RemoteError`` tells apart.
    fileprivate static let notStoredPrefix = "not stored: "
}

/// What an `ERROR` from a server means to a client, read once here so that no client parses the words
/// of ``ClosingError`` texts (or Synapse's) itself.
public enum RemoteError: Equatable, Sendable {
    /// The server is going away: reconnect later.
    case serverShuttingDown
    /// A `REPLICATE` asked for rows the server no longer has.
    case fallenBehind(StreamName)
    /// A `REPLICATE` refused for another reason (Synapse says `failed to handle REPLICATE command`, this
    /// server `failed to handle replicate: …`, e.g. for a stream it does not know).
    case replicateRefused
    /// A writer's line refused; the stream and token it named, as written.
    case writerRejected(stream: String, token: String)
    /// A writer's batch the server could not store for now (``ClosingError/notStored(_:stream:token:_:)``):
    /// sending it again later may succeed.
    case writerNotStored(stream: String, token: String)
    case other

    public init(_ text: String) {
        if text == ClosingError.serverShutdown.text {
            self = .serverShuttingDown
        } else if text.lowercased().hasPrefix("failed to handle replicate") {
            self = Self.fallenBehindStream(in: text).map(RemoteError.fallenBehind) ?? .replicateRefused
        } else if text.hasPrefix("rejected "), let colon = text.firstIndex(of: ":") {
            // `rejected <command> <stream> <token>: <why>` (``ClosingError/writerRejected(_:stream:token:_:)``).
            let words = text[..<colon].split(separator: " ")
            guard words.count == 4 else {
                self = .other
                return
            }
            let (stream, token) = (String(words[2]), String(words[3]))
            let notStored = text[text.index(after: colon)...].hasPrefix(" " + ClosingError.notStoredPrefix)
            self =
                notStored
                ? .writerNotStored(stream: stream, token: token) : .writerRejected(stream: stream, token: token)
        } else {
            self = .other
        }
    }

    /// Whether a `REPLICATE` was refused, for whatever reason.
    public var refusesReplicate: Bool {
        switch self {
        case .fallenBehind, .replicateRefused: true
        case .serverShuttingDown, .writerRejected, .writerNotStored, .other: false
        }
    }

    /// Whether the same request may succeed on a later connection: the server was going away, or could
    /// not store a writer's batch (a full disk, Redis unreachable).
    public var isTransient: Bool {
        switch self {
        case .serverShuttingDown, .writerNotStored: true
        case .fallenBehind, .replicateRefused, .writerRejected, .other: false
        }
    }

    /// The stream of `… stream X has fallen behind` (``ClosingError/fallenBehind(_:)``).
    private static func fallenBehindStream(in text: String) -> StreamName? {
        guard let end = text.firstRange(of: " has fallen behind"),
            let start = text[..<end.lowerBound].ranges(of: "stream ").last
        else { return nil }
        return StreamName(text[start.upperBound..<end.lowerBound])
    }
}
