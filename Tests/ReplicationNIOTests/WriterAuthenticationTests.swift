import Credentials
import Foundation
import NIOCore
import ReplicationCore
import ReplicationNIO
import ReplicationTestSupport
import Testing

/// Who may write: writers with credentials prove themselves with `AUTH`, a name alone is not enough, and
/// what any connection may make the hub append is rate-limited. Real sockets on 127.0.0.1.
@Suite(.serialized) struct WriterAuthenticationTests {
    static let secret = "correct horse battery staple"
    static let credentials = CredentialsFile(hashes: ["pub": PasswordHash.make(password: secret, cost: 4)!])

    func configuration(failureDelay: TimeAmount = .milliseconds(1)) -> ServerConfiguration {
        var configuration = ServerConfiguration(
            serverName: "test.local", writerCredentials: Self.credentials, authenticationFailureDelay: failureDelay)
        // No keepalive PING between the lines a test expects, however slow the machine.
        configuration.protocolLimits.pingIntervalMillis = 600_000
        return configuration
    }

    func closeCount(_ fixture: ServerFixture, _ reason: CloseReason) -> Int {
        fixture.server.hub.countersSnapshot.closeReasons[reason] ?? 0
    }

    @Test func aSpoofedWriterNamePublishesNothingAndTheRealOnePublishesAfterAuth() async throws {
        let fixture = try await ServerFixture.start(configuration())
        let subscriber = try fixture.connect(name: "worker")
        try subscriber.send("REPLICATE events NOW\n")
        #expect(try subscriber.readLine() == "POSITION events 0")

        let spoofer = try fixture.connect(name: "pub")
        try spoofer.send("RDATA events 9223372036854775806 \(eventRow(1))\nPOSITION typing 999999\n")
        #expect(try spoofer.readLine() == "ERROR not authorised: send AUTH <secret> after NAME before RDATA")
        #expect(try spoofer.readsEndOfStream())
        spoofer.close()  // the connection is counted once it is gone
        try await waitUntil { closeCount(fixture, .notAuthorised) == 1 }
        #expect(fixture.log.currentToken(of: .events) == 0)
        #expect(fixture.log.currentToken(of: .typing) == 0)

        let writer = try fixture.connect(name: "pub")
        try writer.send("AUTH \(Self.secret)\nRDATA events 1 \(eventRow(2))\n")
        #expect(try writer.readLine() == "POSITION events 1")
        // The subscriber's first row is the real writer's: nothing of the spoofer's reached it.
        #expect(try subscriber.readLine() == "RDATA events 1 \(eventRow(2))")
        try await fixture.stop()
    }

    @Test func aWrongSecretIsRefusedAfterTheDelayAndCounted() async throws {
        let fixture = try await ServerFixture.start(configuration(failureDelay: .milliseconds(100)))
        let guesser = try fixture.connect(name: "pub")
        let sent = Date()
        try guesser.send("AUTH hunter2\nRDATA events 1 \(eventRow(1))\n")
        #expect(try guesser.readLine() == "ERROR authentication failed")
        #expect(Date().timeIntervalSince(sent) >= 0.1)
        #expect(try guesser.readsEndOfStream())
        guesser.close()
        try await waitUntil { closeCount(fixture, .authenticationFailed) == 1 }
        // The row sent behind the wrong secret was never read as a writer's.
        #expect(fixture.log.currentToken(of: .events) == 0)
        #expect(fixture.server.hub.countersSnapshot.writerAppends == 0)
        try await fixture.stop()
    }

    @Test func authForANameWithoutCredentialsIsRefused() async throws {
        let fixture = try await ServerFixture.start(configuration())
        let worker = try fixture.connect(name: "worker")
        try worker.send("AUTH \(Self.secret)\n")
        #expect(
            try worker.readLine()
                == "ERROR not authorised: AUTH is only for a writer listed with credentials, once, after its first NAME")
        try await fixture.stop()
    }

    @Test func aSecondNameDoesNotMakeAConnectionAWriter() async throws {
        for configuration in [configuration(), ServerConfiguration(serverName: "test.local", writers: ["pub"])] {
            let fixture = try await ServerFixture.start(configuration)
            let worker = try fixture.connect(name: "worker")
            try worker.send("NAME pub\nAUTH \(Self.secret)\nRDATA events 1 \(eventRow(1))\n")
            let answer = try worker.readLine() ?? ""
            #expect(answer.hasPrefix("ERROR "), "\(answer)")
            #expect(try worker.readsEndOfStream())
            #expect(fixture.log.currentToken(of: .events) == 0)
            try await fixture.stop()
        }
    }

    @Test func aBatchTooFarAboveTheStreamsTokenIsRefusedAndNothingOfItIsStored() async throws {
        var limited = ServerConfiguration(serverName: "test.local", writers: ["pub"])
        limited.protocolLimits.pingIntervalMillis = 600_000
        limited.protocolLimits.maxTokenStep = 1_000
        let fixture = try await ServerFixture.start(limited)
        let subscriber = try fixture.connect(name: "worker")
        try subscriber.send("REPLICATE events NOW\n")
        #expect(try subscriber.readLine(timeoutMillis: 30_000) == "POSITION events 0")

        let writer = try fixture.connect(name: "pub")
        try writer.send("RDATA events 5 \(eventRow(1))\n")
        #expect(try writer.readLine(timeoutMillis: 30_000) == "POSITION events 5")
        // The batch's first row is within the step; the token that closes it is not.
        try writer.send("RDATA events batch \(eventRow(2))\nRDATA events 1006 \(eventRow(3))\n")
        #expect(
            try writer.readLine(timeoutMillis: 30_000)
                == "ERROR rejected RDATA events 1006: token must be at most 1000 above the stream's current token 5")
        #expect(try writer.readsEndOfStream(timeoutMillis: 30_000))
        let positioner = try fixture.connect(name: "pub")
        try positioner.send("POSITION typing 999999\n")
        #expect(
            try positioner.readLine(timeoutMillis: 30_000)
                == "ERROR rejected POSITION typing 999999: "
                + "token must be at most 1000 above the stream's current token 0")
        #expect(try positioner.readsEndOfStream(timeoutMillis: 30_000))
        #expect(fixture.log.currentToken(of: .events) == 5)
        #expect(fixture.log.currentToken(of: .typing) == 0)

        // A step of exactly the maximum is taken, and is the subscriber's next row after the first.
        let next = try fixture.connect(name: "pub")
        try next.send("RDATA events 1005 \(eventRow(4))\n")
        #expect(try next.readLine(timeoutMillis: 30_000) == "POSITION events 1005")
        #expect(try subscriber.readLine(timeoutMillis: 30_000) == "RDATA events 5 \(eventRow(1))")
        #expect(try subscriber.readLine(timeoutMillis: 30_000) == "RDATA events 1005 \(eventRow(4))")
        try await fixture.stop()
    }

    @Test func hubRowsBeyondTheConnectionsRateAreRefused() async throws {
        // A clock that never moves: the bucket's burst (ten seconds' worth) is all there is.
        let clock = ManualClock()
        var limited = configuration()
        limited.protocolLimits.hubRowsPerSecond = 2
        let fixture = try await ServerFixture.start(limited, clock: clock.clock)
        let flooder = try fixture.connect(name: "worker")
        try flooder.send(
            (1...21).map { #"INVALIDATE_CACHE get_user_by_id ["@u\#($0):test.local"]"# + "\n" }.joined())
        #expect(try flooder.readLine() == "ERROR too many INVALIDATE_CACHE: at most 2 per second per connection")
        #expect(try flooder.readsEndOfStream())
        flooder.close()
        try await waitUntil { fixture.log.currentToken(of: .caches) == 20 }
        try await waitUntil { closeCount(fixture, .rateLimited) == 1 }

        // Another connection has its own bucket, refilled as time passes.
        let other = try fixture.connect(name: "other")
        try other.send((1...20).map { "REMOVE_PUSHER app key$\($0) @u:test.local\n" }.joined())
        try await waitUntil { fixture.log.currentToken(of: .pushers) == 20 }
        clock.advance(byMillis: 500)
        try other.send("REMOVE_PUSHER app again @u:test.local\nREMOVE_PUSHER app over @u:test.local\n")
        #expect(try other.readLine() == "ERROR too many REMOVE_PUSHER: at most 2 per second per connection")
        try await waitUntil { fixture.log.currentToken(of: .pushers) == 21 }
        try await fixture.stop()
    }
}
