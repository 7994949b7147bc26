import Testing

@testable import ReplicationCore

@Suite struct ServerConnectionStateMachineTests {
    func machine(writers: Set<String> = [], maxPending: Int = 10_000) -> ServerConnectionStateMachine {
        ServerConnectionStateMachine(
            serverName: "test.local", writers: writers,
            configuration: ProtocolConfiguration(maxPendingCommands: maxPending), now: 0)
    }

    @Test func greetsWithServerThenPing() {
        var machine = machine()
        #expect(machine.connectionActive(now: 42, wallMillis: 42) == [.server(name: "test.local"), .ping("42")])
        #expect(machine.counters.outbound(.SERVER) == 1)
        #expect(machine.counters.outbound(.PING) == 1)
    }

    @Test func blankLinesAndPingsNeedNothing() {
        var machine = machine()
        #expect(machine.lineReceived("", now: 1) == .nothing)
        #expect(machine.lineReceived("   ", now: 1) == .nothing)
        #expect(machine.lineReceived("PING 1", now: 1) == .nothing)
        #expect(machine.keepalive.peerHasPinged)
        #expect(machine.counters.inbound(.PING) == 1)
    }

    @Test func theFirstNameAloneDecidesWhetherTheConnectionWrites() {
        var machine = machine(writers: ["pub"])
        #expect(machine.name == "anon")
        #expect(machine.lineReceived("NAME worker1", now: 1) == .dispatch(.name("worker1")))
        #expect(machine.name == "worker1" && !machine.isWriter)
        _ = machine.lineReceived("NAME pub", now: 1)
        #expect(machine.name == "pub" && machine.identity == "worker1" && !machine.isWriter)
        #expect(
            machine.lineReceived("POSITION events 5", now: 1)
                == .reply(.writeErrorAndClose(.error("invalid command: POSITION"))))

        var writer = self.machine(writers: ["pub"])
        _ = writer.lineReceived("NAME pub", now: 1)
        _ = writer.lineReceived("NAME shown-as", now: 1)
        #expect(writer.isWriter && writer.name == "shown-as")
        #expect(writer.lineReceived("POSITION events 5", now: 1) == .dispatch(.position(stream: "events", token: 5)))
    }

    func machineWithCredentials() -> ServerConnectionStateMachine {
        var machine = ServerConnectionStateMachine(
            serverName: "test.local", writers: [], writersWithCredentials: ["pub"],
            configuration: ProtocolConfiguration(), now: 0)
        _ = machine.connectionActive(now: 0, wallMillis: 0)
        return machine
    }

    @Test func aWriterWithCredentialsWritesOnlyAfterItsSecretIsVerified() {
        var machine = machineWithCredentials()
        _ = machine.lineReceived("NAME pub", now: 1)
        #expect(machine.authentication == .awaitingSecret && !machine.isWriter && !machine.takesWriterRows)
        #expect(machine.lineReceived("AUTH s3cret", now: 1) == .dispatch(.auth(secret: "s3cret")))
        #expect(machine.authentication == .verifying && !machine.isWriter)
        #expect(machine.authenticationVerified(true, now: 2) == .nothing)
        #expect(machine.isWriter && machine.takesWriterRows)
        #expect(machine.lineReceived("POSITION events 5", now: 1) == .dispatch(.position(stream: "events", token: 5)))
        // Once is enough: a second AUTH is refused.
        #expect(
            machine.lineReceived("AUTH again", now: 3)
                == .reply(.writeErrorAndClose(.error(ClosingError.unexpectedAuth.text))))
    }

    @Test func aCertificateNamingTheWritersFirstNameStandsInForAuth() {
        var certified = machineWithCredentials()
        certified.peerCertified(as: "pub")
        _ = certified.lineReceived("NAME pub", now: 1)
        #expect(certified.authentication == .certified && certified.isWriter && certified.takesWriterRows)
        // An AUTH sent anyway is checked like any other: a wrong one still ends the connection.
        #expect(certified.lineReceived("AUTH wrong", now: 1) == .dispatch(.auth(secret: "wrong")))
        #expect(certified.authenticationVerified(false, now: 2) == .writeErrorAndClose(.error("authentication failed")))

        // Another first name, even renamed to the certified one later, must AUTH.
        var otherName = machineWithCredentials()
        otherName.peerCertified(as: "pub")
        _ = otherName.lineReceived("NAME worker", now: 1)
        _ = otherName.lineReceived("NAME pub", now: 1)
        #expect(otherName.authentication == .notNeeded && !otherName.isWriter)
        // A name certified but not listed with credentials is no writer.
        var unlisted = machineWithCredentials()
        unlisted.peerCertified(as: "stranger")
        _ = unlisted.lineReceived("NAME stranger", now: 1)
        #expect(unlisted.authentication == .notNeeded && !unlisted.isWriter)
    }

    @Test(arguments: ["RDATA events 1 []", "POSITION events 1"])
    func writingBeforeAuthIsNotAuthorised(line: String) {
        var machine = machineWithCredentials()
        _ = machine.lineReceived("NAME pub", now: 1)
        let command = String(line.prefix { $0 != " " })
        #expect(
            machine.lineReceived(line[...], now: 1)
                == .reply(.writeErrorAndClose(.error("not authorised: send AUTH <secret> after NAME before \(command)"))))
        #expect(machine.state == .closing(.notAuthorised))
    }

    @Test func aWrongSecretEndsTheConnection() {
        var machine = machineWithCredentials()
        _ = machine.lineReceived("NAME pub", now: 1)
        _ = machine.lineReceived("AUTH wrong", now: 1)
        #expect(machine.authenticationVerified(false, now: 2) == .writeErrorAndClose(.error("authentication failed")))
        #expect(machine.state == .closing(.authenticationFailed) && !machine.isWriter)
    }

    @Test(arguments: [[String](), ["NAME worker"], ["NAME worker", "NAME pub"]])
    func authFromAnyoneButAWaitingWriterIsRefused(before: [String]) {
        var machine = machineWithCredentials()
        for line in before { _ = machine.lineReceived(line[...], now: 1) }
        #expect(
            machine.lineReceived("AUTH s3cret", now: 1)
                == .reply(.writeErrorAndClose(.error(ClosingError.unexpectedAuth.text))))
    }

    @Test(arguments: ["RDATA events 1 []", "POSITION events 1", "SERVER x", "SYNC x", "FOO bar", "name x"])
    func commandsFromTheWrongSideAreInvalid(line: String) {
        var machine = machine()
        let name = String(line.split(separator: " ")[0])
        #expect(
            machine.lineReceived(line[...], now: 1)
                == .reply(.writeErrorAndClose(.error("invalid command: \(name)"))))
        #expect(machine.state == .closing(.invalidCommand))
        // Nothing more is read from a closing connection.
        #expect(machine.lineReceived("PING 1", now: 2) == .nothing)
        #expect(machine.counters.inbound(.PING) == 0)
    }

    @Test func unparsableArgumentsCloseWithTheParseError() {
        var machine = machine()
        #expect(
            machine.lineReceived("FEDERATION_ACK x", now: 1)
                == .reply(
                    .writeErrorAndClose(
                        .error(
                            #"failed to parse line for  'FEDERATION_ACK': ValueError("invalid literal for int() with base 10: 'x'") ('x'):"#
                        ))))
        #expect(machine.counters.inbound(.FEDERATION_ACK) == 1)
        #expect(machine.connectionClosed(.closedByPeer) == .parseError)
    }

    @Test func pausedConnectionsQueueCommandsAndResumeInOrder() {
        var machine = machine()
        #expect(machine.writabilityChanged(isWritable: false, now: 1).isEmpty)
        #expect(machine.state == .paused && !machine.isEstablished)
        #expect(machine.send(.position(stream: "events", token: 1), now: 1) == .nothing)
        #expect(machine.send(.ping("2"), now: 2) == .nothing)
        #expect(machine.pendingCommands.count == 2)
        #expect(machine.counters.outbound(.POSITION) == 0)
        #expect(machine.writabilityChanged(isWritable: true, now: 3) == [.position(stream: "events", token: 1), .ping("2")])
        #expect(machine.pendingCommands.isEmpty && machine.counters.outbound(.POSITION) == 1)
        #expect(machine.send(.ping("4"), now: 4) == .write(.ping("4")))
    }

    @Test func moreThanTheLimitOfQueuedCommandsFailsToKeepUp() {
        var machine = machine(maxPending: 3)
        _ = machine.writabilityChanged(isWritable: false, now: 1)
        for _ in 0..<3 { #expect(machine.send(.ping("1"), now: 1) == .nothing) }
        #expect(machine.send(.ping("1"), now: 1) == .writeErrorAndClose(.error("Failed to keep up")))
        #expect(machine.pendingCommands.isEmpty)
        #expect(machine.connectionClosed(.closedByPeer) == .failedToKeepUp)
    }

    @Test func keepaliveTimesOutPingsAndAborts() {
        var machine = machine()
        _ = machine.connectionActive(now: 0, wallMillis: 0)
        #expect(machine.tick(now: 5_000, wallMillis: 5_000) == .write(.ping("5000")))
        #expect(machine.tick(now: 6_000, wallMillis: 6_000) == .nothing)
        _ = machine.lineReceived("PING 1", now: 6_000)
        #expect(machine.tick(now: 31_000, wallMillis: 31_000) == .write(.ping("31000")))
        #expect(machine.tick(now: 31_001, wallMillis: 31_001) == .writeErrorAndClose(.error("ping timeout")))
        #expect(machine.tick(now: 56_001, wallMillis: 56_001) == .nothing)
        #expect(machine.tick(now: 56_002, wallMillis: 56_002) == .abort)
        #expect(machine.connectionClosed(.aborted) == .connectionAborted)
    }

    @Test func wallClockStepsNeitherTimeOutNorKeepAlive() {
        var machine = machine()
        _ = machine.connectionActive(now: 0, wallMillis: 1_000_000)
        _ = machine.lineReceived("PING 1", now: 0)
        // The wall clock jumps an hour ahead: timeouts follow the monotonic time, PING carries the wall time.
        #expect(machine.tick(now: 5_000, wallMillis: 3_605_000_000) == .write(.ping("3605000000")))
        _ = machine.lineReceived("PING 2", now: 20_000)
        // ...and back: a peer that went silent is still timed out on time.
        #expect(machine.tick(now: 45_000, wallMillis: 0) == .write(.ping("0")))
        #expect(machine.tick(now: 45_001, wallMillis: 1) == .writeErrorAndClose(.error("ping timeout")))
    }

    @Test func pingsWhilePausedAreQueued() {
        var machine = machine()
        _ = machine.writabilityChanged(isWritable: false, now: 0)
        #expect(machine.tick(now: 5_000, wallMillis: 5_000) == .nothing)
        #expect(machine.pendingCommands == [.ping("5000")])
    }

    @Test func closeReasonsFollowHowTheConnectionEnded() {
        var clean = machine()
        #expect(clean.connectionClosed(.closedByPeer) == .connectionDone)
        var lost = machine()
        #expect(lost.connectionClosed(.failed) == .connectionLost)
        var shutDown = machine()
        #expect(shutDown.fail(.serverShutdown, now: 0) == .writeErrorAndClose(.error("server shutting down")))
        #expect(shutDown.fail(.pingTimeout, now: 0) == .nothing)
        #expect(shutDown.connectionClosed(.closedByPeer) == .serverShutdown)
        #expect(shutDown.connectionClosed(.failed) == .serverShutdown)
    }

    @Test func replicateErrorTexts() {
        #expect(
            ClosingError.unknownStream("nosuch").text
                == "failed to handle replicate: Exception('unknown stream %s', 'nosuch')")
        #expect(
            ClosingError.fallenBehind(.events).text
                == "failed to handle replicate: Exception('stream events has fallen behind')")
    }
}
