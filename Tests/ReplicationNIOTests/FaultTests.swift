import Foundation
import NIOPosix
import ReplicationCore
import ReplicationNIO
import ReplicationTestSupport
import StreamLog
import Testing

/// The durable log on ground that gives way: a disk that fills up and frees up again.
@Suite(.serialized) struct FaultTests {
    let configuration = ServerConfiguration(serverName: "test.local", writers: ["pub"])

    /// Mounting needs root (as CI runs); elsewhere there is nothing to mount on.
    static let canMount = getuid() == 0

    func mount(_ arguments: [String]) throws {
        let result = try runProcess("/usr/bin/mount", arguments)
        guard result.status == 0 else { throw SocketError("mount \(arguments): \(result.errors)") }
    }

    @Test(.enabled(if: canMount, "mounting a small tmpfs needs root"))
    func aFullDiskRefusesTheWriterKeepsServingReadersAndRecoversWhenSpaceReturns() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("full-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", directory])
        defer {
            _ = try? runProcess("/usr/bin/umount", [directory])
            try? FileManager.default.removeItem(atPath: directory)
        }
        let log = try SQLiteStreamLog(directory: directory, sync: .normal, clock: { ConnectionClock.system.wallMillis })
        let fixture = try await ServerFixture.start(configuration, log: log)
        let reader = try fixture.connect(name: "reader")
        try reader.send("REPLICATE events NOW\n")
        #expect(try reader.readLine() == "POSITION events 0")

        // Rows of about 2 KB, one at a time, until the disk is full.
        let writer = try fixture.connect(name: "pub")
        let padding = String(repeating: "x", count: 2_000)
        func row(_ token: Int) -> String { "[\"ev\", [\"$\(token)\", \"\(padding)\"]]" }
        var stored = 0
        var refusal: String?
        while refusal == nil, stored < 2_000 {
            try writer.send("RDATA events \(stored + 1) \(row(stored + 1))\n")
            let answer = try #require(try writer.readLine())
            if answer.hasPrefix("ERROR") { refusal = answer } else { stored += 1 }
        }
        let error = try #require(refusal)
        #expect(error.contains("events") && error.contains("full"), "\(error)")
        #expect(stored > 10)  // the WAL and the database share the megabyte

        // The reader got every stored row, and is still connected and served.
        let rows = try reader.readLines(stored)
        #expect(rows.last == "RDATA events \(stored) \(row(stored))")

        // Space returns: the next writer's row is stored and reaches the reader.
        try mount(["-o", "remount,size=16m", directory])
        let again = try fixture.connect(name: "pub")
        try again.send("RDATA events \(stored + 1) \(row(stored + 1))\n")
        #expect(try again.readLine() == "POSITION events \(stored + 1)")
        #expect(try reader.readLine() == "RDATA events \(stored + 1) \(row(stored + 1))")
        try await fixture.stop()
        await log.close()
    }
}
