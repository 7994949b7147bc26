import Foundation
import ReplicationCore
import ReplicationNIO
import ReplicationRelay
import ReplicationTestSupport
import StreamLog
import Testing

/// Hub → relay → workers on loopback, each test starting and stopping its own servers.
@Suite(.serialized) struct RelayTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("relay-\(UUID().uuidString)").path

    /// `count` RDATA lines, skipping the PINGs that keepalive sends.
    func rows(_ socket: LineSocket, _ count: Int) throws -> [String] {
        var rows: [String] = []
        while rows.count < count {
            guard let line = try socket.readLine() else { throw SocketError("end of stream after \(rows.count) rows") }
            if line.hasPrefix("RDATA ") { rows.append(line) }
        }
        return rows
    }

    /// Subscribes and waits for the `POSITION` that ends catch-up; returns the rows before it.
    func subscribe(_ socket: LineSocket, _ stream: String, from token: String) throws -> [String] {
        try socket.send("REPLICATE \(stream) \(token)\n")
        return try socket.readLines { $0.hasPrefix("POSITION \(stream) ") }.filter { $0.hasPrefix("RDATA ") }
    }

    /// Publishes tokens `range` on events, two rows each (a batch), and waits for every acknowledgement.
    func publish(_ writer: LineSocket, _ range: ClosedRange<Int>) throws {
        for token in range {
            try writer.send("RDATA events batch \(eventRow(2 * token))\nRDATA events \(token) \(eventRow(2 * token + 1))\n")
        }
        let acks = try writer.readLines(until: { $0 == "POSITION events \(range.upperBound)" })
        #expect(acks.filter { $0.hasPrefix("POSITION events ") }.count == range.count)
    }

    func expectedRows(_ range: ClosedRange<Int>) -> [String] {
        range.flatMap { token in
            ["RDATA events batch \(eventRow(2 * token))", "RDATA events \(token) \(eventRow(2 * token + 1))"]
        }
    }

    @Test func rowsFromTheHubReachEveryWorkerInOrderAndTheirCommandsReachTheHub() async throws {
        let hub = try await ServerFixture.start(ServerConfiguration(serverName: "hub.local", writers: ["pub"]))
        let relay = try await RelayFixture.start(upstreamPort: hub.port, upstreamServerName: "hub.local")
        try await waitUntil { relay.link.currentStatus.connected }

        let workers = try (0..<3).map { try relay.connect(name: "worker-\($0)") }
        for worker in workers { #expect(try subscribe(worker, "events", from: "NOW").isEmpty) }
        let writer = try hub.connect(name: "pub")
        try publish(writer, 1...40)
        for worker in workers { #expect(try rows(worker, 80) == expectedRows(1...40)) }

        // Commands go upstream, and what the hub makes of them comes back down.
        let commander = workers[0]
        _ = try subscribe(commander, "caches", from: "NOW")
        _ = try subscribe(commander, "pushers", from: "NOW")
        try commander.send(
            """
            USER_SYNC @a:test.local start 1
            FEDERATION_ACK 7
            REMOVE_PUSHER m.http key1 @a:test.local
            INVALIDATE_CACHE get_user_by_id ["@a:test.local"]
            USER_IP @a:test.local ["tok", "1.2.3.4", "ua", null, 1]

            """)
        try await waitUntil {
            let counters = hub.server.hub.countersSnapshot
            return counters.userSync == 1 && counters.federationAck == 1 && counters.lastFederationAck == 7
                && counters.removePusher == 1 && counters.invalidateCache == 1 && counters.userIP == 1
        }
        let echoed = try commander.readLines(until: { $0.hasPrefix("RDATA pushers ") || $0.hasPrefix("RDATA caches ") })
        let rest = try commander.readLines(until: { $0.hasPrefix("RDATA pushers ") || $0.hasPrefix("RDATA caches ") })
        let lines = Set([echoed.last!, rest.last!].map { $0.split(separator: " ").prefix(3).joined(separator: " ") })
        #expect(lines == ["RDATA pushers 1", "RDATA caches 1"])

        // One user synced by two workers: upstream hears the first start and the last end only.
        try workers[1].send("USER_SYNC @a:test.local start 2\nUSER_SYNC @a:test.local end 3\n")
        try await waitUntil { relay.server.server.hub.countersSnapshot.userSync == 3 }
        try commander.send("USER_SYNC @a:test.local end 4\n")
        try await waitUntil { hub.server.hub.countersSnapshot.userSync == 2 }
        let status = relay.link.currentStatus
        #expect(status.forwarded[CommandName.USER_SYNC.index] == 2)
        #expect(status.forwarded[CommandName.FEDERATION_ACK.index] == 1)
        #expect(status.receivedTokens[StreamName.events.index] == 40)
        #expect(status.reconnects == 0 && status.queuedCommands == 0)

        try await relay.stop()
        try await hub.stop()
    }

    @Test func relaysChain() async throws {
        let hub = try await ServerFixture.start(ServerConfiguration(serverName: "hub.local", writers: ["pub"]))
        let first = try await RelayFixture.start(upstreamPort: hub.port, upstreamServerName: "hub.local", serverName: "first")
        let second = try await RelayFixture.start(upstreamPort: first.port, upstreamServerName: "first", serverName: "second")
        try await waitUntil { first.link.currentStatus.connected && second.link.currentStatus.connected }
        let worker = try second.connect(name: "worker")
        _ = try subscribe(worker, "events", from: "NOW")
        try publish(try hub.connect(name: "pub"), 1...10)
        #expect(try rows(worker, 20) == expectedRows(1...10))
        try worker.send("FEDERATION_ACK 9\n")
        try await waitUntil { hub.server.hub.countersSnapshot.lastFederationAck == 9 }
        try await second.stop()
        try await first.stop()
        try await hub.stop()
    }

    @Test func aHubRestartLeavesWorkersWithNoGapAndNoDuplicate() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let configuration = ServerConfiguration(serverName: "hub.local", writers: ["pub"])
        var hub = try await ServerFixture.start(configuration, log: try sqliteLog("hub"))
        let hubPort = hub.port
        let relay = try await RelayFixture.start(upstreamPort: hubPort, upstreamServerName: "hub.local")
        try await waitUntil { relay.link.currentStatus.connected }
        let worker = try relay.connect(name: "worker")
        _ = try subscribe(worker, "events", from: "NOW")
        try publish(try hub.connect(name: "pub"), 1...25)
        #expect(try rows(worker, 50) == expectedRows(1...25))
        try worker.send("USER_SYNC @z:test.local start 1\n")
        try await waitUntil { hub.server.hub.countersSnapshot.userSync == 1 }

        try await hub.stop()
        try await waitUntil { !relay.link.currentStatus.connected }
        hub = try await ServerFixture.start(configuration, log: try sqliteLog("hub"), port: hubPort)
        try await waitUntil(seconds: 20) { relay.link.currentStatus.connected }
        // The new hub hears again that the user is syncing.
        try await waitUntil { hub.server.hub.countersSnapshot.userSync == 1 }
        try publish(try hub.connect(name: "pub"), 26...50)
        #expect(try rows(worker, 50) == expectedRows(26...50))
        #expect(relay.link.currentStatus.reconnects == 1)
        // Nothing more: the next line is a keepalive PING (within two ping intervals), not a repeated row.
        let next = try worker.readLine(timeoutMillis: 12_000)
        #expect(next?.hasPrefix("PING ") == true, "unexpected \(next ?? "end of stream")")

        try await relay.stop()
        try await hub.stop()
    }

    /// An upstream that flaps: stopped and restarted five times, with rows published before each stop and
    /// straight after each restart (before the relay is back). Its worker gets every row exactly once, and
    /// the relay is back each time within the first reconnect delays: a connection that finished subscribing
    /// starts the back-off over (without that, the fifth reconnect alone would wait 26-34 s).
    @Test func anUpstreamThatFlapsLeavesWorkersWithEveryRowOnce() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let configuration = ServerConfiguration(serverName: "hub.local", writers: ["pub"])
        var hub = try await ServerFixture.start(configuration, log: try sqliteLog("hub"))
        let hubPort = hub.port
        let relay = try await RelayFixture.start(upstreamPort: hubPort, upstreamServerName: "hub.local")
        try await waitUntil { relay.link.currentStatus.subscribed }
        let worker = try relay.connect(name: "worker")
        _ = try subscribe(worker, "events", from: "NOW")
        let rounds = 5
        for round in 0..<rounds {
            let first = round * 10 + 1
            try publish(try hub.connect(name: "pub"), first...(first + 4))
            try await hub.stop()
            hub = try await ServerFixture.start(configuration, log: try sqliteLog("hub"), port: hubPort)
            try publish(try hub.connect(name: "pub"), (first + 5)...(first + 9))
            // `connected` alone may still be the connection before the stop, or one the next stop cuts
            // before every stream answered (which keeps the back-off growing): wait for this round's
            // connection to have subscribed.
            try await waitUntil(seconds: 20) {
                let status = relay.link.currentStatus
                return status.reconnects == round + 1 && status.subscribed
            }
        }
        #expect(try rows(worker, rounds * 20) == expectedRows(1...(rounds * 10)))
        #expect(relay.link.currentStatus.reconnects == rounds)
        // Nothing more: the next line is a keepalive PING (within two ping intervals), not a repeated row.
        let next = try worker.readLine(timeoutMillis: 12_000)
        #expect(next?.hasPrefix("PING ") == true, "unexpected \(next ?? "end of stream")")

        try await relay.stop()
        try await hub.stop()
    }

    @Test func aRestartedRelayServesItsWorkersFromItsDurableLog() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let hub = try await ServerFixture.start(ServerConfiguration(serverName: "hub.local", writers: ["pub"]))
        var relay = try await RelayFixture.start(
            upstreamPort: hub.port, upstreamServerName: "hub.local", log: try sqliteLog("relay"))
        try await waitUntil { relay.link.currentStatus.connected }
        let worker = try relay.connect(name: "worker")
        _ = try subscribe(worker, "events", from: "NOW")
        try publish(try hub.connect(name: "pub"), 1...30)
        #expect(try rows(worker, 60) == expectedRows(1...30))

        // Both go away; the relay comes back alone, on its log.
        try await relay.stop()
        try await hub.stop()
        relay = try await RelayFixture.start(
            upstreamPort: hub.port, upstreamServerName: "hub.local", log: try sqliteLog("relay"))
        let again = try relay.connect(name: "worker")
        let caughtUp = try subscribe(again, "events", from: "12")
        #expect(caughtUp == catchUpRows(13...30))
        #expect(!relay.link.currentStatus.connected)
        try await relay.stop()
    }

    @Test func rowsPublishedWhileTheRelayIsDownArriveWholeWhenItComesBack() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let hub = try await ServerFixture.start(ServerConfiguration(serverName: "hub.local", writers: ["pub"]))
        let writer = try hub.connect(name: "pub")
        var relay = try await RelayFixture.start(
            upstreamPort: hub.port, upstreamServerName: "hub.local", log: try sqliteLog("relay"))
        try await waitUntil { relay.link.currentStatus.connected }
        try publish(writer, 1...5)
        try await waitUntil { relay.server.log.currentToken(of: .events) == 5 }
        try await relay.stop()

        // Catch-up from the hub sends each of a token's two rows with that token: both must be kept.
        try publish(writer, 6...15)
        relay = try await RelayFixture.start(
            upstreamPort: hub.port, upstreamServerName: "hub.local", log: try sqliteLog("relay"))
        try await waitUntil { relay.server.log.currentToken(of: .events) == 15 }
        let worker = try relay.connect(name: "worker")
        #expect(try subscribe(worker, "events", from: "5") == catchUpRows(6...15))
        try publish(writer, 16...16)
        #expect(try rows(worker, 2) == expectedRows(16...16))
        try await relay.stop()
        try await hub.stop()
    }

    @Test func aRelayThatFellBehindItsUpstreamStartsAgainAtItsToken() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let hub = try await ServerFixture.start(
            ServerConfiguration(serverName: "hub.local", writers: ["pub"]), log: InMemoryStreamLog(retainRows: 4))
        let writer = try hub.connect(name: "pub")
        var relay = try await RelayFixture.start(
            upstreamPort: hub.port, upstreamServerName: "hub.local", log: try sqliteLog("relay"))
        try await waitUntil { relay.link.currentStatus.connected }
        try publish(writer, 1...2)
        try await waitUntil { relay.server.log.currentToken(of: .events) == 2 }
        try await relay.stop()

        // While the relay is down the hub moves on and forgets what the relay would ask for.
        try publish(writer, 3...20)
        relay = try await RelayFixture.start(
            upstreamPort: hub.port, upstreamServerName: "hub.local", log: try sqliteLog("relay"))
        try await waitUntil(seconds: 20) { relay.server.log.currentToken(of: .events) == 20 }
        let worker = try relay.connect(name: "worker")
        _ = try subscribe(worker, "events", from: "NOW")
        try publish(writer, 21...21)
        #expect(try rows(worker, 2) == expectedRows(21...21))

        // A worker asking for what neither has hears that it has fallen behind.
        let behind = try relay.connect(name: "behind")
        try behind.send("REPLICATE events 2\n")
        let error = try behind.readLines { $0.hasPrefix("ERROR ") }.last
        #expect(error == "ERROR failed to handle replicate: Exception('stream events has fallen behind')")
        #expect(relay.link.currentStatus.failedBackfills == 1)
        try await relay.stop()
        try await hub.stop()
    }

    @Test func aWorkerBehindTheRelaysLogIsServedFromUpstream() async throws {
        let hub = try await ServerFixture.start(ServerConfiguration(serverName: "hub.local", writers: ["pub"]))
        let writer = try hub.connect(name: "pub")
        try publish(writer, 1...20)
        // Started now, the relay's log begins at token 20: older rows exist only upstream.
        let relay = try await RelayFixture.start(upstreamPort: hub.port, upstreamServerName: "hub.local")
        try await waitUntil { relay.server.log.currentToken(of: .events) == 20 }

        let worker = try relay.connect(name: "worker")
        let caughtUp = try subscribe(worker, "events", from: "5")
        #expect(caughtUp == catchUpRows(6...20))
        try publish(writer, 21...21)
        #expect(try rows(worker, 2) == expectedRows(21...21))
        #expect(relay.link.currentStatus.backfills == 1)
        try await relay.stop()
        try await hub.stop()
    }

    func sqliteLog(_ name: String) throws -> SQLiteStreamLog {
        try SQLiteStreamLog(directory: directory + "/" + name, sync: .normal, clock: { ConnectionClock.system.wallMillis })
    }

    /// Catch-up sends every row with its numeric token.
    func catchUpRows(_ range: ClosedRange<Int>) -> [String] {
        range.flatMap { token in
            ["RDATA events \(token) \(eventRow(2 * token))", "RDATA events \(token) \(eventRow(2 * token + 1))"]
        }
    }
}
