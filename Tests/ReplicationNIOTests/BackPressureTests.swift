import Dispatch
import Foundation
import NIOPosix
import ReplicationCore
import ReplicationNIO
import ReplicationTestSupport
import StreamLog
import Testing

/// What the server does when a peer or the log is slow, on real sockets.
@Suite(.serialized) struct BackPressureTests {
    let configuration = ServerConfiguration(serverName: "test.local", writers: ["pub"])

    @Test func aReplicateBeyondTheHeadOfTheDurableLogIsAnsweredWithTheHead() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ahead-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try SQLiteStreamLog(directory: directory, sync: .normal, clock: { ConnectionClock.system.wallMillis })
        let fixture = try await ServerFixture.start(configuration, log: log)
        let writer = try fixture.connect(name: "pub")
        try writer.send("RDATA events 3 \(eventRow(3))\n")
        #expect(try writer.readLine() == "POSITION events 3")
        let ahead = try fixture.connect(name: "w")
        try ahead.send("REPLICATE events 12345678901234567890123\n")
        #expect(try ahead.readLine() == "POSITION events 3")
        // And what comes after the head reaches it.
        try writer.send("RDATA events 4 \(eventRow(4))\n")
        #expect(try ahead.readLine() == "RDATA events 4 \(eventRow(4))")
        try await fixture.stop()
        await log.close()
    }

    @Test func aWriterThatReadsItsAcknowledgementsSlowlyIsNeverDropped() async throws {
        var configuration = configuration
        // Small buffers both ways, and few commands allowed to queue: the writer's acknowledgements back
        // up at once, far beyond what a queue of them could hold.
        configuration.protocolLimits.maxPendingCommands = 100
        configuration.socketSendBuffer = 4096
        let fixture = try await ServerFixture.start(configuration)
        let writer = try LineSocket(port: fixture.port, receiveBuffer: 4096)
        _ = try writer.readLines(2)
        try writer.send("NAME pub\n")
        let rows = 20_000
        let lines = Array((1...rows).map { "RDATA events \($0) \(eventRow($0))\n" }.joined().utf8)
        let sent = DispatchSemaphore(value: 0)
        // Sent from another thread: while the writer does not read, the server stops reading from it, so
        // the send may block until the acknowledgements are read below.
        DispatchQueue.global().async {
            try? writer.send(lines)
            sent.signal()
        }
        // The server stops reading from the writer rather than queueing acknowledgements.
        try await waitUntil {
            let snapshot = try? await fixture.snapshots().first { $0.name == "pub" }
            return (snapshot?.kernelReceiveQueue ?? 0) > 0 && (snapshot?.kernelSendQueue ?? 0) > 0
        }
        let acknowledgements = try writer.readLines(until: { $0 == "POSITION events \(rows)" || $0.hasPrefix("ERROR") })
        #expect(!acknowledgements.contains { $0.hasPrefix("ERROR") })
        #expect(acknowledgements.last == "POSITION events \(rows)")
        // Cumulative: fewer than one per batch were needed, and they only go forward.
        let tokens = acknowledgements.compactMap { Int($0.split(separator: " ")[2]) }
        #expect(tokens == tokens.sorted() && tokens.count <= rows)
        sent.wait()
        #expect(fixture.server.hub.countersSnapshot.writerAppends == rows)
        #expect(fixture.server.hub.countersSnapshot.closeReasons.isEmpty)
        writer.close()
        try await fixture.stop()
    }

    @Test func aWriterIsNotReadFromWhileTooManyOfItsRowsWaitForACommit() async throws {
        var configuration = configuration
        configuration.protocolLimits.maxUnstoredWriterBytes = 64 * 1024
        let log = GatedStreamLog(holdingAppends: true)
        let fixture = try await ServerFixture.start(configuration, log: log)
        let writer = try fixture.connect(name: "pub")
        // Far more than the kernel's buffers hold: a server that kept reading would hold most of it.
        let rows = 200_000
        let lines = Array((1...rows).map { "RDATA events \($0) \(eventRow($0))\n" }.joined().utf8)
        var sent = 0
        // Sends until the kernel takes no more while the server is not reading from the writer.
        try await waitUntil(seconds: 30) {
            var taken = 1
            while taken > 0, sent < lines.count {
                taken = writer.sendWithoutBlocking(Array(lines[sent..<min(sent + 65536, lines.count)]))
                sent += taken
            }
            guard sent < lines.count else { return true }
            let snapshot = try? await fixture.snapshots().first { $0.name == "pub" }
            return (snapshot?.kernelReceiveQueue ?? 0) > 0
                && log.heldAppendBytes >= configuration.protocolLimits.maxUnstoredWriterBytes
        }
        #expect(sent < lines.count)
        // What waits for a commit is the bound and at most a few reads past it.
        #expect(log.heldAppendBytes < 1024 * 1024)
        log.releaseAppends()
        let rest = Array(lines[sent...])
        let sender = Task.detached { try writer.send(rest) }
        let acknowledgements = try writer.readLines(
            until: { $0 == "POSITION events \(rows)" || $0.hasPrefix("ERROR") }, timeoutMillis: 30_000)
        try await sender.value
        #expect(acknowledgements.last == "POSITION events \(rows)")
        #expect(fixture.server.hub.countersSnapshot.writerAppends == rows)
        try await fixture.stop()
    }

    @Test func aCatchUpFromASlowLogDoesNotDelayLiveRowsOnTheSameEventLoop() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let log = GatedStreamLog()
        let fixture = try await ServerFixture.start(configuration, log: log, group: group)
        let writer = try fixture.connect(name: "pub")
        try writer.send((1...3).map { "RDATA events \($0) \(eventRow($0))\n" }.joined())
        #expect(try writer.readLines(3).last == "POSITION events 3")
        let catchingUp = try fixture.connect(name: "behind")
        try catchingUp.send("REPLICATE events 0\n")
        try waitUntilTrue { log.waitingReads == 1 }
        // The page read is stuck on the disk; the one event loop serves everyone else meanwhile.
        let live = try fixture.connect(name: "live")
        try live.send("REPLICATE events NOW\n")
        #expect(try live.readLine() == "POSITION events 3")
        try writer.send("RDATA events 4 \(eventRow(4))\n")
        #expect(try writer.readLine() == "POSITION events 4")
        #expect(try live.readLine() == "RDATA events 4 \(eventRow(4))")
        #expect(log.waitingReads == 1)
        log.open()
        #expect(
            try catchingUp.readLines(5) == (1...4).map { "RDATA events \($0) \(eventRow($0))" } + ["POSITION events 4"])
        try await fixture.stop()
        try await group.shutdownGracefully()
    }
}
