import Logging
import ReplicationCore

/// What the server logs about one connection, every line carrying the peer's address and, once it has
/// sent `NAME`, its name. One place for the wording operators search for. The lines every connection
/// logs pass the server's flood gate.
struct ConnectionLog {
    private var logger: Logger
    private let gate: ConnectionLogGate

    init(_ gate: ConnectionLogGate) {
        self.logger = gate.logger
        self.gate = gate
    }

    mutating func opened(peer: String) {
        logger[metadataKey: "peer"] = "\(peer)"
        if gate.admit(.opened) { logger.info("connection opened") }
    }

    mutating func named(_ name: String, isWriter: Bool) {
        logger[metadataKey: "name"] = "\(name)"
        if gate.admit(.named) { logger.info("connection named", metadata: ["writer": "\(isWriter)"]) }
    }

    func closed(_ reason: CloseReason) {
        if gate.admit(.closed(reason)) { logger.info("connection closed", metadata: ["reason": "\(reason.rawValue)"]) }
    }

    func transportError(_ error: any Error) { logger.debug("transport error", metadata: ["error": "\(error)"]) }

    func closing(with error: Command) {
        guard gate.admit(.closingWithError) else { return }
        logger.warning("closing connection", metadata: ["error": "\(CommandCodec.encode(error))"])
    }

    /// Logged with the peer's address, as every line here: who is guessing.
    func wrongSecret(writer: String) { logger.warning("wrong secret for writer", metadata: ["writer": "\(writer)"]) }

    func writerAuthenticated(_ writer: String) { logger.info("writer authenticated", metadata: ["writer": "\(writer)"]) }

    func peerReportedError(_ text: String) { logger.error("remote reported error", metadata: ["error": "\(text)"]) }

    func readingNotChanged(_ error: any Error) {
        logger.debug("could not change reading", metadata: ["error": "\(error)"])
    }

    func readFailed(_ stream: StreamName, after: Int64, _ why: String) {
        logger.error(
            "stream log read failed", metadata: ["stream": "\(stream)", "after": "\(after)", "error": "\(why)"])
    }

    func fetchingOlderRows(_ stream: StreamName, after: Int64) {
        logger.info(
            "fetching rows older than the log from upstream", metadata: ["stream": "\(stream)", "after": "\(after)"])
    }

    func olderRowsUnavailable(_ stream: StreamName, _ error: any Error) {
        logger.warning("upstream could not provide older rows", metadata: ["stream": "\(stream)", "error": "\(error)"])
    }

    func appendFailed(_ stream: StreamName, _ error: any Error) {
        logger.error("could not append row", metadata: ["stream": "\(stream)", "error": "\(error)"])
    }
}
