import Testing

@testable import ReplicationCore

@Suite struct ClientConnectionStateMachineTests {
    func machine(_ subscriptions: [(StreamName, ReplicateFrom)] = [(.events, .token(5)), (.caches, .now)])
        -> ClientConnectionStateMachine
    {
        ClientConnectionStateMachine(
            clientName: "worker", expectedServerName: "test.local", subscriptions: subscriptions,
            syncingUsers: ["@bob:test.local"], configuration: ProtocolConfiguration(), now: 0)
    }

    @Test func connectsWithNamePingReplicateAndSyncingUsers() {
        var machine = machine()
        let (commands, finished) = machine.connectionActive(now: 7, wallMillis: 7)
        #expect(
            commands == [
                .name("worker"), .ping("7"), .replicate(stream: "events", from: .token(5)),
                .replicate(stream: "caches", from: .now), .userSync(userID: "@bob:test.local", state: .start, lastSyncMillis: 7),
            ])
        #expect(!finished)
        var idle = self.machine([])
        let idleStart = idle.connectionActive(now: 0, wallMillis: 0)
        #expect(idleStart.finishedConnecting)
    }

    @Test func batchRowsAreHandedOverWithTheirClosingToken() {
        var machine = machine()
        _ = machine.connectionActive(now: 0, wallMillis: 0)
        #expect(machine.lineReceived(#"RDATA caches batch ["f", ["a"], 1]"#, now: 1) == [])
        let events = machine.lineReceived(#"RDATA events 6 ["ev", ["$1", "!r", "t", null, null, null]]"#, now: 1)
        #expect(events.count == 1)
        #expect(
            machine.lineReceived(#"RDATA caches 3 ["f", ["b"], 1]"#, now: 1) == [
                .rows(.caches, token: 3, rows: [#"["f", ["a"], 1]"#, #"["f", ["b"], 1]"#])
            ])
        #expect(machine.rdataReceived[StreamName.caches.index] == 2)
    }

    @Test func finishedConnectingOnceEveryStreamHasAPosition() {
        var machine = machine()
        _ = machine.connectionActive(now: 0, wallMillis: 0)
        #expect(machine.lineReceived("POSITION events 9", now: 1) == [.position(.events, token: 9)])
        #expect(machine.lineReceived("POSITION caches 2", now: 1) == [.position(.caches, token: 2), .finishedConnecting])
        #expect(machine.lineReceived("POSITION caches 3", now: 1) == [.position(.caches, token: 3)])
    }

    @Test func aWrongServerNameIsRefused() {
        var machine = machine()
        #expect(machine.lineReceived("SERVER test.local", now: 1) == [])
        #expect(machine.lineReceived("SERVER elsewhere", now: 1) == [.reply(.writeErrorAndClose(.error("Wrong remote")))])
        #expect(machine.connectionClosed(.closedByPeer) == .wrongRemote)
    }

    @Test func aBadRowIsReportedAndTheConnectionStays() {
        var machine = machine()
        #expect(
            machine.lineReceived(#"RDATA caches 3 ["only", "two"]"#, now: 1) == [
                .badRow(stream: "caches", reason: "a caches row is a JSON array of 3 fields")
            ])
        #expect(machine.isEstablished && machine.badRows == 1)
        #expect(machine.lineReceived("NAME x", now: 1) == [.reply(.writeErrorAndClose(.error("invalid command: NAME")))])
    }

    @Test func serverErrorsAndKeepalive() {
        var machine = machine()
        _ = machine.connectionActive(now: 0, wallMillis: 0)
        #expect(machine.lineReceived("ERROR server shutting down", now: 1) == [.remoteError("server shutting down")])
        _ = machine.lineReceived("PING 1", now: 1_000)
        #expect(machine.tick(now: 5_000, wallMillis: 5_000) == .write(.ping("5000")))
        #expect(machine.tick(now: 26_001, wallMillis: 26_001) == .writeErrorAndClose(.error("ping timeout")))
    }
}

@Suite struct ReconnectBackoffTests {
    @Test func startsAtOneSecondGrowsByEAndStopsAtThirty() {
        var backoff = ReconnectBackoff()
        let delays = (0..<7).map { _ in backoff.nextDelayMillis(random: 0) }
        #expect(delays == [1_000, 2_718, 7_389, 20_086, 30_000, 30_000, 30_000])
    }

    @Test func jitterIsAtMostTwelvePercent() {
        var low = ReconnectBackoff()
        var high = ReconnectBackoff()
        let lowest = low.nextDelayMillis(random: -1)
        let highest = high.nextDelayMillis(random: 1)
        let clamped = high.nextDelayMillis(random: 5)  // at most +12 % however large the draw
        #expect(lowest == 880 && highest == 1_120 && clamped == 3_044)
    }

    @Test func resetsOnlyWhenTold() {
        var backoff = ReconnectBackoff()
        _ = backoff.nextDelayMillis(random: 0)
        _ = backoff.nextDelayMillis(random: 0)
        backoff.reset()
        let first = backoff.nextDelayMillis(random: 0)
        #expect(first == 1_000)
    }
}

@Suite struct ClientSessionTests {
    @Test func resumesEachStreamAfterItsLastProcessedToken() {
        var session = ClientSession(subscriptions: [(.events, .now), (.caches, .token(3))])
        session.processed(.caches, through: 9)
        #expect(session.positions.map(\.1) == [.now, .token(9)])
        session.processed(.events, through: 4)
        #expect(session.positions.map(\.1) == [.token(4), .token(9)])
    }

    @Test func commandsWaitingForAConnectionAreBounded() {
        var session = ClientSession(subscriptions: [], maxQueued: 2)
        let accepted = (1...3).map { session.queue(.federationAck(token: $0)) }
        #expect(accepted == [true, true, false])
        let first = session.takeQueued()
        let second = session.takeQueued()
        #expect(first == [.federationAck(token: 1), .federationAck(token: 2)] && second.isEmpty)
    }

    @Test func syncingUsersAreReannouncedNotQueued() {
        var session = ClientSession(subscriptions: [])
        let queued = session.queue(.userSync(userID: "@a:x", state: .start, lastSyncMillis: 1))
        session.sent(.userSync(userID: "@b:x", state: .start, lastSyncMillis: 1))
        session.sent(.userSync(userID: "@a:x", state: .end, lastSyncMillis: 2))
        let leftOver = session.takeQueued()
        #expect(queued && session.syncingUsers == ["@b:x"] && leftOver.isEmpty)
    }
}
