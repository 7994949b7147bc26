import Testing

@testable import ReplicationCore

@Suite struct KeepaliveTests {
    let configuration = ProtocolConfiguration()

    @Test func pingsOnlyAfterFiveSecondsOfSilence() {
        var keepalive = Keepalive(now: 0, configuration: configuration)
        keepalive.sent(now: 1_000)
        #expect(keepalive.tick(now: 5_999) == .nothing)
        #expect(keepalive.tick(now: 6_000) == .sendPing)
    }

    @Test func aPeerThatNeverPingedIsNeverTimedOut() {
        var keepalive = Keepalive(now: 0, configuration: configuration)
        keepalive.received(.NAME, now: 0)
        keepalive.sent(now: 1_000_000)
        #expect(keepalive.tick(now: 1_000_000) == .nothing)
    }

    @Test func timesOutTwentyFiveSecondsAfterTheLastCommandOnceThePeerHasPinged() {
        var keepalive = Keepalive(now: 0, configuration: configuration)
        keepalive.received(.PING, now: 0)
        keepalive.received(.REPLICATE, now: 10_000)
        keepalive.sent(now: 35_000)
        #expect(keepalive.tick(now: 35_000) == .nothing)
        #expect(keepalive.tick(now: 35_001) == .timeOut)
    }

    @Test func abortsTwentyFiveSecondsAfterAnUncleanClose() {
        var keepalive = Keepalive(now: 0, configuration: configuration)
        keepalive.closeRequested(now: 100)
        keepalive.closeRequested(now: 20_000)  // the first request counts
        #expect(keepalive.tick(now: 25_100) == .nothing)
        #expect(keepalive.tick(now: 25_101) == .abort)
    }
}
