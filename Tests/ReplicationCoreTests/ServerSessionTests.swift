import Testing

@testable import ReplicationCore

/// The server session driven event by event, with `String` standing for the transport's bytes and a
/// manual clock (every `now` is given).
@Suite struct ServerSessionTests {
    typealias Session = ServerSession<String>

    func session(
        routing: any CommandRouting = HubRouting(), writers: Set<String> = ["pub"], maxPending: Int = 10_000
    ) -> Session {
        var session = Session(
            serverName: "test.local", writers: writers,
            configuration: ProtocolConfiguration(maxPendingCommands: maxPending), routing: routing, now: 0)
        _ = session.connectionActive(now: 0, wallMillis: 0)
        return session
    }

    /// Heads of the log: `events` at 10, every other stream at 0.
    func head(_ stream: StreamName) -> Int64 { stream == .events ? 10 : 0 }

    func receive(_ session: inout Session, _ line: String, now: Int64 = 1, wallMillis: Int64 = 1_000) -> [Session
        .Action]
    {
        session.lineReceived(line[...], now: now, wallMillis: wallMillis, head: head)
    }

    func page(_ lines: String, rows: Int, end: Int64, head: Bool) -> PageRead<String> {
        .page(CatchUpPage(lines: lines, rowCount: rows, endToken: end, reachedHead: head))
    }

    func batch(_ previous: Int64, _ token: Int64, _ lines: String = "row\n") -> StreamBatch<String> {
        StreamBatch(stream: .events, previousToken: previous, token: token, rowCount: 1, liveLines: lines)
    }

    @Test func greetsWithServerAndAWallClockPing() {
        var session = Session(
            serverName: "test.local", writers: [], configuration: ProtocolConfiguration(), routing: HubRouting(), now: 5
        )
        #expect(
            session.connectionActive(now: 5, wallMillis: 1_700) == [
                .write(.server(name: "test.local")), .write(.ping("1700")),
            ])
    }

    @Test func catchUpReadsOnePageAtATimeAndOnlyWhileWritable() {
        var session = session()
        #expect(receive(&session, "REPLICATE events 4") == [.joinFanout(.events)])
        #expect(session.nextRead(isWritable: false) == nil)
        #expect(session.nextRead(isWritable: true) == .readPage(.events, after: 4))
        // One page at a time: nothing more is asked while it is read.
        #expect(session.nextRead(isWritable: true) == nil)
        #expect(
            session.pageRead(.events, after: 4, page("a\nb\n", rows: 2, end: 7, head: false), now: 2) == [
                .writeRows("a\nb\n", count: 2)
            ])
        #expect(session.nextRead(isWritable: true) == .readPage(.events, after: 7))
        #expect(
            session.pageRead(.events, after: 7, page("c\n", rows: 1, end: 10, head: true), now: 3)
                == [.writeRows("c\n", count: 1), .write(.position(stream: "events", token: 10))])
        #expect(session.nextRead(isWritable: true) == nil)
        #expect(session.sentTokens[StreamName.events.index] == 10)
        #expect(session.machine.counters.outbound(.RDATA) == 3)
    }

    @Test func aBatchCommittedWhileThePageToTheHeadWasReadIsReadNext() {
        var session = session()
        _ = receive(&session, "REPLICATE events 4")
        #expect(session.nextRead(isWritable: true) == .readPage(.events, after: 4))
        // While the page is read (the log's head is 10), batch (10, 11] is committed and handed over.
        #expect(session.batchesAppended([batch(10, 11)], joined: batch(10, 11), isWritable: true, now: 2) == [])
        #expect(session.pageRead(.events, after: 4, page("a\n", rows: 1, end: 10, head: true), now: 3) == [
            .writeRows("a\n", count: 1)
        ])
        // Not live at 10, where nothing more would come if that batch was the last: the log is read on.
        #expect(session.nextRead(isWritable: true) == .readPage(.events, after: 10))
        #expect(
            session.pageRead(.events, after: 10, page("row\n", rows: 1, end: 11, head: true), now: 4)
                == [.writeRows("row\n", count: 1), .write(.position(stream: "events", token: 11))])
        #expect(session.nextRead(isWritable: true) == nil)
    }

    @Test func aPageAskedForBeforeTheSameReplicateAgainIsNotTheHeadItMissed() {
        var session = session()
        _ = receive(&session, "REPLICATE events 4")
        #expect(session.nextRead(isWritable: true) == .readPage(.events, after: 4))
        // While the page is read at head 10, batch (10, 11] is committed; then the worker asks again.
        _ = session.batchesAppended([batch(10, 11)], joined: batch(10, 11), isWritable: true, now: 2)
        _ = session.lineReceived("REPLICATE events 4"[...], now: 3, wallMillis: 1_000) { $0 == .events ? 11 : 0 }
        #expect(session.pageRead(.events, after: 4, page("a\n", rows: 1, end: 10, head: true), now: 4) == [
            .writeRows("a\n", count: 1)
        ])
        #expect(session.nextRead(isWritable: true) == .readPage(.events, after: 10))
    }

    @Test func aPausedConnectionAsksForNoPage() {
        var session = session()
        _ = receive(&session, "REPLICATE events 4")
        _ = session.writabilityChanged(isWritable: false, now: 1)
        #expect(session.nextRead(isWritable: true) == nil)
        _ = session.writabilityChanged(isWritable: true, now: 2)
        #expect(session.nextRead(isWritable: true) == .readPage(.events, after: 4))
    }

    @Test func aPageMadeStaleByANewReplicateIsDropped() {
        var session = session()
        _ = receive(&session, "REPLICATE events 4")
        _ = session.nextRead(isWritable: true)
        _ = receive(&session, "REPLICATE events 6")
        #expect(session.pageRead(.events, after: 4, page("x\n", rows: 1, end: 10, head: true), now: 2) == [])
        #expect(session.nextRead(isWritable: true) == .readPage(.events, after: 6))
    }

    @Test func replicateBeyondTheHeadIsAnsweredWithTheHead() {
        var session = session()
        _ = receive(&session, "REPLICATE events 12345678901234567890123")
        // The cursor starts at the head, so the page read is the empty one at the head.
        #expect(session.nextRead(isWritable: true) == .readPage(.events, after: 10))
        #expect(
            session.pageRead(.events, after: 10, page("", rows: 0, end: 10, head: true), now: 2)
                == [.write(.position(stream: "events", token: 10))])
        // Live rows after the head follow.
        #expect(
            session.batchesAppended([batch(10, 11)], joined: batch(10, 11), isWritable: true, now: 3) == [
                .writeRows("row\n", count: 1)
            ])
    }

    @Test func replicateNowAndAllAndUnknownStreams() {
        var session = session()
        #expect(
            receive(&session, "REPLICATE events NOW") == [
                .joinFanout(.events), .write(.position(stream: "events", token: 10)),
            ])
        let all = receive(&session, "REPLICATE ALL 0")
        #expect(all.count == StreamName.all.count)
        #expect(all.allSatisfy { if case .joinFanout = $0 { true } else { false } })
        #expect(
            receive(&session, "REPLICATE nosuch 0") == [
                .submitWriterBatches, .leaveFanout,
                .writeErrorAndClose(
                    .error("failed to handle replicate: Exception('unknown stream %s', 'nosuch')"),
                    reason: .replicateFailed),
            ])
    }

    @Test func liveBatchesGoOutWhileWritableAndTurnToCatchUpWhenNot() {
        var session = session()
        _ = receive(&session, "REPLICATE events NOW")
        #expect(
            session.batchesAppended([batch(10, 11)], joined: batch(10, 11), isWritable: true, now: 2) == [
                .writeRows("row\n", count: 1)
            ])
        // Not writable: the cursor stays, and the rows will be read from the log.
        #expect(session.batchesAppended([batch(11, 12)], joined: batch(11, 12), isWritable: false, now: 3) == [])
        #expect(session.nextRead(isWritable: true) == .readPage(.events, after: 11))
        // A gap (a batch the connection never saw) is also served from the log.
        var gap = self.session()
        _ = receive(&gap, "REPLICATE events NOW")
        #expect(gap.batchesAppended([batch(12, 13)], joined: batch(12, 13), isWritable: true, now: 2) == [])
        #expect(gap.nextRead(isWritable: true) == .readPage(.events, after: 10))
    }

    @Test func logFailuresCloseWithTheirTexts() {
        var behind = session()
        _ = receive(&behind, "REPLICATE events 1")
        _ = behind.nextRead(isWritable: true)
        #expect(
            behind.pageRead(.events, after: 1, .fallenBehind(oldestServable: 5), now: 2).last
                == .writeErrorAndClose(
                    .error("failed to handle replicate: Exception('stream events has fallen behind')"),
                    reason: .replicateFailed))
        var broken = session()
        _ = receive(&broken, "REPLICATE events 1")
        _ = broken.nextRead(isWritable: true)
        #expect(
            broken.pageRead(.events, after: 1, .failed("disk I/O error"), now: 2).last
                == .writeErrorAndClose(
                    .error("failed to handle replicate: Exception('stream events: disk I/O error')"),
                    reason: .replicateFailed))
    }

    @Test func aRelayFetchesRowsOlderThanItsLogThenReadsTheLog() {
        var session = session(routing: RelayRouting())
        _ = receive(&session, "REPLICATE events 1")
        _ = session.nextRead(isWritable: true)
        #expect(
            session.pageRead(.events, after: 1, .fallenBehind(oldestServable: 5), now: 2)
                == [.fetchOlderRows(.events, after: 1, through: 5, request: 1)])
        #expect(session.nextRead(isWritable: true) == nil)
        #expect(
            session.olderRowsFetched(.events, request: 1, page("old\n", rows: 3, end: 5, head: false), now: 3)
                == [.writeRows("old\n", count: 3)])
        #expect(session.nextRead(isWritable: true) == .readPage(.events, after: 5))
        // A stale answer (a new REPLICATE came in between) is dropped; a failed one closes.
        _ = receive(&session, "REPLICATE typing 0")
        _ = session.pageRead(.events, after: 5, page("", rows: 0, end: 10, head: true), now: 4)
        _ = session.nextRead(isWritable: true)
        _ = session.pageRead(.typing, after: 0, .fallenBehind(oldestServable: 2), now: 5)
        #expect(session.olderRowsFetched(.typing, request: 1, page("x\n", rows: 1, end: 2, head: false), now: 6) == [])
        #expect(
            session.olderRowsFetched(.typing, request: 2, .failed("upstream gone"), now: 6).last
                == .writeErrorAndClose(
                    .error("failed to handle replicate: Exception('stream typing has fallen behind')"),
                    reason: .replicateFailed))
    }

    @Test func aHubTurnsWorkerCommandsIntoRows() {
        var session = session()
        #expect(
            receive(&session, #"INVALIDATE_CACHE get_user_by_id ["@a:x"]"#, wallMillis: 77) == [
                .count(.invalidateCache(cacheFunction: "get_user_by_id", keysJSON: #"["@a:x"]"#)),
                .appendRow(.caches, row: #"["get_user_by_id", ["@a:x"], 77]"#),
            ])
        #expect(
            receive(&session, "REMOVE_PUSHER app key @u:x") == [
                .count(.removePusher(appID: "app", pushKey: "key", userID: "@u:x")),
                .appendRow(.pushers, row: #"["@u:x", "app", "key", true]"#),
            ])
        #expect(receive(&session, "FEDERATION_ACK 7") == [.count(.federationAck(token: 7))])
        #expect(
            receive(&session, "USER_SYNC @u:x start 5") == [
                .count(.userSync(userID: "@u:x", state: .start, lastSyncMillis: 5))
            ])
        #expect(session.syncingUsers == ["@u:x"])
        // A hub's syncing users simply go with the connection.
        #expect(session.connectionClosed(.closedByPeer, wallMillis: 9).actions == [.submitWriterBatches, .leaveFanout])
    }

    @Test func aRelayForwardsWorkerCommandsAndEndsItsSyncingUsers() {
        var session = session(routing: RelayRouting())
        let command = Command.removePusher(appID: "app", pushKey: "key", userID: "@u:x")
        #expect(receive(&session, "REMOVE_PUSHER app key @u:x") == [.count(command), .forward(command)])
        _ = receive(&session, "USER_SYNC @b:x start 5")
        _ = receive(&session, "USER_SYNC @a:x start 5")
        _ = receive(&session, "USER_SYNC @c:x start 5")
        _ = receive(&session, "USER_SYNC @c:x end 6")
        let (reason, actions) = session.connectionClosed(.closedByPeer, wallMillis: 9)
        #expect(reason == .connectionDone)
        #expect(
            actions == [
                .submitWriterBatches, .leaveFanout, .forward(.userSync(userID: "@a:x", state: .end, lastSyncMillis: 9)),
                .forward(.userSync(userID: "@b:x", state: .end, lastSyncMillis: 9)),
            ])
    }

    @Test func aWriterIsAcknowledgedAtOnceWhileWritable() {
        var session = session()
        _ = receive(&session, "NAME pub")
        let positions = [StreamPosition(.events, 3), StreamPosition(.events, 4), StreamPosition(.caches, 1)]
        #expect(session.writerBatchesStored(positions, refusal: nil, bytes: 0, now: 2) == [.acknowledge(positions)])
        #expect(session.machine.counters.outbound(.POSITION) == 3)
    }

    @Test func aWriterIsNotReadFromWhileTooManyOfItsBytesWaitForACommit() {
        var session = Session(
            serverName: "test.local", writers: ["pub"],
            configuration: ProtocolConfiguration(maxUnstoredWriterBytes: 100),
            routing: HubRouting(), now: 0)
        _ = session.connectionActive(now: 0, wallMillis: 0)
        _ = receive(&session, "NAME pub")
        #expect(session.writerBatchesSubmitted(bytes: 60) == [])
        #expect(session.writerBatchesSubmitted(bytes: 40) == [.readFromPeer(false)])
        #expect(session.readsFromPeer == false)
        let first = [StreamPosition(.events, 1)]
        // Still 60 bytes unstored, under the bound: reading resumes with the acknowledgement.
        #expect(
            session.writerBatchesStored(first, refusal: nil, bytes: 40, now: 2) == [
                .readFromPeer(true), .acknowledge(first),
            ])
        // Both reasons to stop: reading resumes only once neither holds.
        #expect(session.writerBatchesSubmitted(bytes: 50) == [.readFromPeer(false)])
        #expect(session.writabilityChanged(isWritable: false, now: 3) == [])
        #expect(session.writerBatchesStored([], refusal: nil, bytes: 110, now: 4) == [])
        #expect(session.writabilityChanged(isWritable: true, now: 5) == [.readFromPeer(true)])
    }

    @Test func aPausedWriterHoldsOnlyTheNewestAcknowledgementPerStreamAndIsNotReadFrom() {
        var session = session(maxPending: 2)
        _ = receive(&session, "NAME pub")
        #expect(session.writabilityChanged(isWritable: false, now: 2) == [.readFromPeer(false)])
        // Far more acknowledgements than the pending-command limit: held, one per stream, never queued.
        for token in 1...1_000 {
            #expect(
                session.writerBatchesStored([StreamPosition(.events, Int64(token))], refusal: nil, bytes: 0, now: 3)
                    == [])
        }
        #expect(session.writerBatchesStored([StreamPosition(.typing, 8)], refusal: nil, bytes: 0, now: 3) == [])
        #expect(session.machine.state == .paused)
        #expect(
            session.writabilityChanged(isWritable: true, now: 4) == [
                .acknowledge([StreamPosition(.events, 1_000), StreamPosition(.typing, 8)]), .readFromPeer(true),
            ])
        #expect(session.writabilityChanged(isWritable: true, now: 5) == [])
    }

    @Test func aWriterNotReadFromIsNotTimedOutForItsSilence() {
        var session = session()
        _ = receive(&session, "NAME pub")
        _ = receive(&session, "PING 1")
        _ = session.writabilityChanged(isWritable: false, now: 1)
        // Queued while paused (not written), and no timeout: the silence is ours.
        #expect(session.tick(now: 30_000, wallMillis: 30_000) == [])
        #expect(session.tick(now: 60_000, wallMillis: 60_000) == [])
        _ = session.writabilityChanged(isWritable: true, now: 60_001)
        #expect(session.tick(now: 80_000, wallMillis: 80_000) == [.write(.ping("80000"))])
        #expect(
            session.tick(now: 85_002, wallMillis: 85_002)
                == [
                    .submitWriterBatches, .leaveFanout,
                    .writeErrorAndClose(.error("ping timeout"), reason: .pingTimeout),
                ])
    }

    @Test func aWorkerIsNotStoppedFromReadingWhenPaused() {
        var session = session()
        _ = receive(&session, "NAME w1")
        #expect(session.writabilityChanged(isWritable: false, now: 1) == [])
        #expect(session.writabilityChanged(isWritable: true, now: 2) == [])
    }

    @Test func aWriterIsNotReadFromWhileItsSecretIsVerifiedThenReadsWhatItSentMeanwhile() {
        var session = Session(
            serverName: "test.local", writers: [], writersWithCredentials: ["pub"],
            configuration: ProtocolConfiguration(), routing: HubRouting(), now: 0)
        _ = session.connectionActive(now: 0, wallMillis: 0)
        _ = receive(&session, "NAME pub")
        #expect(
            receive(&session, "AUTH s3cret") == [.verifySecret(writer: "pub", secret: "s3cret"), .readFromPeer(false)])
        #expect(session.holdsLines)
        // Paused and resumed meanwhile: still not read from until the secret is checked.
        #expect(session.writabilityChanged(isWritable: false, now: 2) == [])
        #expect(session.writabilityChanged(isWritable: true, now: 3) == [])
        #expect(
            session.secretVerified(true, now: 4) == [.writerAuthenticated("pub"), .readFromPeer(true), .readHeldLines])
        #expect(!session.holdsLines)
    }

    @Test func aWriterIsNotReadFromWhileItsResentBatchIsCompared() {
        var session = session()
        _ = receive(&session, "NAME pub")
        #expect(session.resentBatchCheckStarted() == [.readFromPeer(false)])
        #expect(session.holdsLines)
        let again = [StreamPosition(.events, 2), StreamPosition(.events, 3)]
        #expect(session.resentBatchChecked(again, refusal: nil, now: 2) == [.readFromPeer(true), .acknowledge(again)])
        #expect(!session.holdsLines)

        _ = session.resentBatchCheckStarted()
        let refusal = ClosingError.tokenNotAfterCurrent(
            .RDATA, stream: .events, token: 2, current: 3, difference: "nothing is stored at token 2")
        #expect(
            refusal.text
                == "rejected RDATA events 2: token must be greater than the stream's current token 3, or repeat what is "
                + "stored: nothing is stored at token 2")
        #expect(
            session.resentBatchChecked([], refusal: refusal, now: 3) == [
                .readFromPeer(true), .submitWriterBatches, .leaveFanout,
                .writeErrorAndClose(.error(refusal.text), reason: .writerRejected),
            ])
    }

    @Test func aRefusedBatchClosesTheWriterAfterAcknowledgingWhatWasStored() {
        var session = session()
        _ = receive(&session, "NAME pub")
        let refusal = ClosingError.tokenNotAfterCurrent(.RDATA, stream: .events, token: 3, current: 5)
        #expect(refusal.text == "rejected RDATA events 3: token must be greater than the stream's current token 5")
        #expect(
            session.writerBatchesStored([StreamPosition(.events, 2)], refusal: refusal, bytes: 0, now: 2) == [
                .acknowledge([StreamPosition(.events, 2)]), .submitWriterBatches, .leaveFanout,
                .writeErrorAndClose(.error(refusal.text), reason: .writerRejected),
            ])
        // Nothing more once closing.
        #expect(session.writerBatchesStored([StreamPosition(.events, 9)], refusal: nil, bytes: 0, now: 3) == [])
    }

    @Test func writerLinesAreHandedOverAndTheirRejectionsClose() {
        var session = session()
        _ = receive(&session, "NAME pub")
        #expect(session.takesWriterRows)
        #expect(receive(&session, "POSITION events 12") == [.ingest(.position(stream: "events", token: 12))])
        let rejection = ClosingError.writerRejected(.RDATA, stream: "nosuch", token: "1", "unknown stream")
        #expect(
            session.writerLineRejected(rejection, now: 2).last
                == .writeErrorAndClose(.error(rejection.text), reason: .writerRejected))
        #expect(!session.takesWriterRows)
    }

    @Test func shutdownThenAbort() {
        var session = session()
        #expect(
            session.shutDown(now: 1).last
                == .writeErrorAndClose(.error("server shutting down"), reason: .serverShutdown))
        #expect(session.abort() == [.abort])
        #expect(session.connectionClosed(.closedByPeer, wallMillis: 2).reason == .connectionAborted)
    }

    @Test func theNameIsReportedAndPeerErrorsToo() {
        var session = session()
        #expect(receive(&session, "NAME pub") == [.named("pub", isWriter: true)])
        #expect(receive(&session, "ERROR oops") == [.peerReportedError("oops")])
    }
}
