import BusObserver
import Foundation
import Logging
import NIOCore
import NIOPosix
import RedisClient
import ReplicationCore
import ReplicationMetrics
import ReplicationNIO
import ReplicationTestSupport
import Testing

/// An observer on one event loop against a real Redis, driven from the test.
final class LiveObserver: @unchecked Sendable {  // the observer is only touched on its loop
    let loop = MultiThreadedEventLoopGroup.singleton.next()
    let clock = ManualClock()
    let observer: SynapseBusObserver

    init(redis: RedisServer, serverName: String, probeIntervalMillis: Int64) throws {
        var logger = Logger(label: "observer-test")
        logger.logLevel = .critical
        observer = SynapseBusObserver(
            configuration: ObserverConfiguration(
                endpoint: try RedisEndpoint(url: redis.url), serverName: serverName,
                probeIntervalMillis: probeIntervalMillis),
            eventLoop: loop, clock: clock.clock, logger: logger)
        let observer = self.observer
        try loop.submit { observer.start() }.wait()
    }

    var snapshot: BusSnapshot {
        let observer = self.observer
        return try! loop.submit { observer.snapshot() }.wait()
    }

    func writer(_ stream: String, _ instance: String) -> BusObservation.WriterState? {
        snapshot.observation.writers[.init(stream: stream, instance: instance)]
    }

    func count(_ command: BusCommandName) -> Int {
        snapshot.observation.commands[BusCommandName.allCases.firstIndex(of: command)!]
    }

    func stop() {
        let observer = self.observer
        try? loop.submit { observer.stop() }.wait()
    }
}

@Suite(.serialized) struct ObserverTests {
    static let sample = try! String(
        contentsOf: repositoryRoot.appendingPathComponent("Tests/InteropModern/modern_bus_sample.txt"), encoding: .utf8
    ).split(separator: "\n").filter { !$0.hasPrefix("#") }.map(String.init)

    @Test func countsRealTrafficPerStreamAndInstanceAndNeverPublishesWithoutProbes() async throws {
        let redis = try RedisServer()
        let observer = try LiveObserver(redis: redis, serverName: "modern.test", probeIntervalMillis: 0)
        defer { observer.stop() }
        try await waitUntil(seconds: 15) { observer.snapshot.redis.first?.connected == true }
        #expect(observer.snapshot.redis.map(\.role) == ["subscriber"])
        for message in Self.sample + ["USER_IP @u:modern.test [\"t\",\"::1\",\"ua\",null,1]"] {
            try redis.cli(["PUBLISH", message.hasPrefix("USER_IP") ? "modern.test/USER_IP" : "modern.test", message])
        }
        try redis.cli(["PUBLISH", "modern.test", "NEW_IN_SYNAPSE_2027 x"])
        try await waitUntil { observer.snapshot.observation.sizeCounts.reduce(0, +) == Self.sample.count + 2 }
        let snapshot = observer.snapshot
        #expect(observer.writer("events", "master") == .init(position: 20, rows: 15, gaps: 0))
        #expect(observer.writer("typing", "master") == .init(position: 1, rows: 1, gaps: 0))
        #expect(observer.writer("quarantined_media", "master") == .init(position: 1, rows: 0, gaps: 0))
        #expect(
            observer.count(.LOCK_RELEASED) == 11 && observer.count(.USER_IP) == 1 && observer.count(.REPLICATE) == 1)
        #expect(snapshot.observation.malformed[BusMalformedReason.allCases.firstIndex(of: .unknownCommand)!] == 1)
        #expect(snapshot.observation.lastSeenMillis == ["master": observer.clock.clock.wallMillis])
        #expect(snapshot.probes == 0)
        // Only the sample's own REPLICATE was published: the observer sent nothing.
        #expect(try redis.cli(["PUBSUB", "NUMSUB", "modern.test"]) == "modern.test\n1\n")
    }

    @Test func aRedisRestartIsSurvivedAndTheRowsMissedMeanwhileCountAsAGap() async throws {
        let redis = try RedisServer()
        let observer = try LiveObserver(redis: redis, serverName: "h", probeIntervalMillis: 3_600_000)
        defer { observer.stop() }
        // Both connections up: one probe at once.
        try await waitUntil(seconds: 15) { observer.snapshot.probes == 1 && observer.count(.REPLICATE) == 1 }
        try redis.cli(["PUBLISH", "h", "RDATA events master 20 []"])
        try await waitUntil { observer.writer("events", "master")?.position == 20 }

        redis.stop()
        try await waitUntil(seconds: 15) { observer.snapshot.redis.allSatisfy { !$0.connected } }
        try redis.start()
        // Reconnected (after the 1 s back-off), probed again; a writer answers with where it is now.
        try await waitUntil(seconds: 15) { observer.snapshot.probes == 2 && observer.count(.REPLICATE) == 2 }
        try redis.cli(["PUBLISH", "h", "POSITION events master 23 23"])
        try await waitUntil { observer.writer("events", "master")?.position == 23 }
        #expect(observer.writer("events", "master")?.gaps == 1)
        let links = observer.snapshot.redis
        #expect(links.map(\.role) == ["subscriber", "publisher"])
        #expect(links.allSatisfy { $0.connected && $0.connections == 2 && $0.disconnections == 1 })
    }

    @Test func probesAreRepeatedEveryInterval() async throws {
        let redis = try RedisServer()
        let observer = try LiveObserver(redis: redis, serverName: "h", probeIntervalMillis: 100)
        defer { observer.stop() }
        // One on connecting, then one per interval; each is seen on the bus like anyone's REPLICATE.
        try await waitUntil(seconds: 15) { observer.snapshot.probes >= 4 }
        try await waitUntil { observer.count(.REPLICATE) >= 4 }
        #expect(observer.snapshot.observation.malformed.allSatisfy { $0 == 0 })
    }
}
