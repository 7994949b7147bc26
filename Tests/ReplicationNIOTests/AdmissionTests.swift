import NIOCore
import ReplicationCore
import ReplicationNIO
import ReplicationTestSupport
import Testing

/// Who may connect: `--allow-from` and `--max-connections`, decided at accept on real sockets.
@Suite(.serialized) struct AdmissionTests {
    func closeCount(_ fixture: ServerFixture, _ reason: CloseReason) -> Int {
        fixture.server.hub.countersSnapshot.closeReasons[reason] ?? 0
    }

    @Test func aPeerOutsideAllowFromIsClosedAtAcceptAndCounted() async throws {
        let fixture = try await ServerFixture.start(
            ServerConfiguration(serverName: "test.local", allowFrom: [AddressRange("127.0.0.1/32")!]))
        // 127.0.0.2 is loopback too, but outside the range: closed before the greeting.
        let outsider = try LineSocket(port: fixture.port, source: "127.0.0.2")
        #expect(try outsider.readsEndOfStream())
        try await waitUntil { closeCount(fixture, .notAllowed) == 1 }
        let insider = try LineSocket(port: fixture.port, source: "127.0.0.1")
        #expect(try insider.readLine()?.hasPrefix("SERVER test.local") == true)
        #expect(closeCount(fixture, .notAllowed) == 1)
        try await fixture.stop()
    }

    @Test func connectionsBeyondTheLimitAreClosedAndPlacesAreFreedOnClose() async throws {
        var configuration = ServerConfiguration(serverName: "test.local", maxConnections: 2)
        configuration.protocolLimits.pingIntervalMillis = 600_000  // no PING between the lines expected
        let fixture = try await ServerFixture.start(configuration)
        let first = try fixture.connect(name: "one")
        let second = try fixture.connect(name: "two")
        let third = try LineSocket(port: fixture.port)
        #expect(try third.readsEndOfStream())
        try await waitUntil { closeCount(fixture, .tooManyConnections) == 1 }
        first.close()
        // Once the first is gone its place is free again.
        try await waitUntil { closeCount(fixture, .connectionDone) + closeCount(fixture, .connectionLost) == 1 }
        let fourth = try fixture.connect(name: "four")
        try fourth.send("REPLICATE events NOW\n")
        #expect(try fourth.readLine() == "POSITION events 0")
        _ = second
        try await fixture.stop()
    }

    @Test(arguments: [
        ("10.0.0.0/8", "10.200.3.4", true), ("10.0.0.0/8", "11.0.0.1", false), ("127.0.0.1", "127.0.0.1", true),
        ("127.0.0.1", "127.0.0.2", false), ("192.168.1.128/25", "192.168.1.127", false),
        ("192.168.1.128/25", "192.168.1.200", true), ("0.0.0.0/0", "8.8.8.8", true), ("fd00::/8", "fd12::1", true),
        ("fd00::/8", "fe80::1", false), ("::1", "::1", true), ("127.0.0.0/8", "::ffff:127.0.0.9", true),
        ("::1", "127.0.0.1", false),
    ])
    func rangesContainTheirAddresses(range: String, address: String, contained: Bool) throws {
        let parsed = try #require(AddressRange(range))
        #expect(parsed.contains(try SocketAddress(ipAddress: address, port: 1)) == contained)
    }

    @Test(arguments: ["", "10.0.0.0/33", "::/129", "10.0.0/8", "example.com", "10.0.0.0/", "10.0.0.0/8/8"])
    func badRangesAreRefused(text: String) {
        #expect(AddressRange(text) == nil)
    }

    @Test func rangesAreShownNormalised() {
        #expect(AddressRange("10.1.2.3/8")?.description == "10.0.0.0/8")
        #expect(AddressRange("fd00::1")?.description == "fd00::1/128")
    }
}
