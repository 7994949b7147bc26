import Testing

@testable import ReplicationCore

/// Clients read `ERROR` texts through one classifier: ours (made by ``ClosingError``) and Synapse's.
@Suite struct RemoteErrorTests {
    @Test func ourOwnTextsAreRecognised() {
        #expect(RemoteError(ClosingError.serverShutdown.text) == .serverShuttingDown)
        #expect(RemoteError(ClosingError.fallenBehind(.caches).text) == .fallenBehind(.caches))
        #expect(RemoteError(ClosingError.unknownStream("nosuch").text) == .replicateRefused)
        #expect(RemoteError(ClosingError.replicateFailed(.events, "disk I/O error").text) == .replicateRefused)
        let rejected = ClosingError.tokenNotAfterCurrent(.RDATA, stream: .events, token: 3, current: 5)
        #expect(RemoteError(rejected.text) == .writerRejected(stream: "events", token: "3"))
        #expect(
            RemoteError(ClosingError.writerRejected(.POSITION, stream: "x", token: "batch", "no").text)
                == .writerRejected(stream: "x", token: "batch"))
        #expect(RemoteError(ClosingError.pingTimeout.text) == .other)
        let notStored = ClosingError.notStored(.RDATA, stream: .events, token: 3, "database or disk is full")
        #expect(RemoteError(notStored.text) == .writerNotStored(stream: "events", token: "3"))
        #expect(RemoteError(notStored.text).isTransient && RemoteError(ClosingError.serverShutdown.text).isTransient)
        #expect(!RemoteError(rejected.text).isTransient && !RemoteError(ClosingError.pingTimeout.text).isTransient)
    }

    @Test func synapsesRefusalAndAnythingElse() {
        #expect(RemoteError("Failed to handle REPLICATE command") == .replicateRefused)
        #expect(RemoteError("Failed to handle REPLICATE command").refusesReplicate)
        #expect(RemoteError(ClosingError.fallenBehind(.events).text).refusesReplicate)
        #expect(!RemoteError("server shutting down").refusesReplicate)
        #expect(RemoteError("rejected without a colon") == .other)
        #expect(RemoteError("") == .other)
    }
}
