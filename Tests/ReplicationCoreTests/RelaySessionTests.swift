import Testing

@testable import ReplicationCore

/// The relay's upstream side driven event by event.
@Suite struct RelaySessionTests {
    /// A relay whose log has `events` up to 10 and nothing else.
    func session() -> RelaySession {
        RelaySession(heads: StreamName.all.map { $0 == .events ? 10 : 0 })
    }

    @Test func asksForEveryStreamAfterItsLogAndAtNowForOneItNeverSaw() {
        let subscriptions = session().subscriptions
        #expect(subscriptions.count == StreamName.all.count)
        #expect(subscriptions.first { $0.0 == .events }?.1 == .token(10))
        #expect(subscriptions.first { $0.0 == .caches }?.1 == .now)
    }

    @Test func catchUpRowsOfOneTokenAreStoredAsOneBatch() {
        var session = session()
        #expect(session.rowsReceived(["a"], stream: .events, token: 11) == [])
        #expect(session.rowsReceived(["b"], stream: .events, token: 11) == [])
        #expect(
            session.rowsReceived(["c"], stream: .events, token: 12)
                == [.store(.events, rows: ["a", "b"], token: 11, startsLog: false)])
        #expect(
            session.positionReceived(12, stream: .events) == [.store(.events, rows: ["c"], token: 12, startsLog: false)]
        )
        // Live now: whole batches as they come; anything at or below what was stored is not stored again.
        #expect(
            session.rowsReceived(["d", "e"], stream: .events, token: 13)
                == [.store(.events, rows: ["d", "e"], token: 13, startsLog: false)])
        #expect(session.rowsReceived(["d"], stream: .events, token: 13) == [])
        #expect(session.lastStored[StreamName.events.index] == 13)
    }

    @Test func aStreamJoinedAtNowStartsTheLogAtItsFirstPosition() {
        var session = session()
        #expect(
            session.positionReceived(40, stream: .caches) == [.store(.caches, rows: [], token: 40, startsLog: true)])
        #expect(
            session.positionReceived(41, stream: .caches) == [.store(.caches, rows: [], token: 41, startsLog: false)])
        #expect(session.positionReceived(41, stream: .caches) == [])
    }

    @Test func aLostConnectionDropsAnUnfinishedTokenAndResumesAfterWhatWasStored() {
        var session = session()
        _ = session.rowsReceived(["a"], stream: .events, token: 11)
        let actions = session.connectionChanged(connected: false)
        // Streams still waiting for their first position stay at NOW.
        #expect(actions == [.resume(.events, after: 10)])
        #expect(session.connectionChanged(connected: true) == [])
        #expect(session.rowsReceived(["a2"], stream: .events, token: 11) == [])
        #expect(
            session.positionReceived(11, stream: .events) == [
                .store(.events, rows: ["a2"], token: 11, startsLog: false)
            ])
    }

    @Test func fallingBehindUpstreamRestartsTheStreamAtNow() {
        var session = session()
        _ = session.rowsReceived(["a"], stream: .events, token: 11)
        let error = ClosingError.fallenBehind(.events).text
        #expect(session.serverError(error) == [.restartAtNow(.events)])
        // Until the upstream answers, a reconnect asks for it at NOW again, not after the old token.
        #expect(session.connectionChanged(connected: false) == [])
        _ = session.connectionChanged(connected: true)
        // Nothing of the unfinished token is stored; the next position starts the log again.
        #expect(
            session.positionReceived(500, stream: .events) == [.store(.events, rows: [], token: 500, startsLog: true)])
        #expect(session.connectionChanged(connected: false) == [.resume(.events, after: 500)])
    }

    @Test func aRefusedReplicateWhileConnectingProbesTheStreamsThatHaveNotAnswered() {
        var session = session()
        for stream in StreamName.all where stream != .federation { _ = session.positionReceived(20, stream: stream) }
        #expect(session.serverError("Failed to handle REPLICATE command") == [.probeOffered([.federation])])
        #expect(session.streamNotOffered(.federation) == [.unsubscribe(.federation)])
        #expect(session.streamNotOffered(.federation) == [])
        #expect(!session.subscribed.contains(.federation))
        // Once connected, a refusal is not about which streams are offered.
        session.connectingFinished()
        #expect(session.serverError("Failed to handle REPLICATE command") == [])
        #expect(session.serverError("server shutting down") == [])
    }

    @Test func upstreamSeesTheRelayAsOneWorker() {
        var session = session()
        let start = Command.userSync(userID: "@u:x", state: .start, lastSyncMillis: 1)
        let end = Command.userSync(userID: "@u:x", state: .end, lastSyncMillis: 2)
        #expect(session.workerCommand(start) == [.send(start)])
        #expect(session.workerCommand(start) == [])
        #expect(session.workerCommand(end) == [])
        #expect(session.workerCommand(end) == [.send(end)])
        #expect(session.workerCommand(end) == [])
        #expect(session.workerCommand(.federationAck(token: 3)) == [.send(.federationAck(token: 3))])
    }
}
