import Foundation
import NIOPosix
import ReplicationCore
import ReplicationNIO
import ReplicationTestSupport
import StreamLog
import Testing

/// The durable log on ground that gives way: a disk that fills up and frees up again, a data directory
/// that is read-only.
@Suite(.serialized) struct FaultTests {
    let configuration = ServerConfiguration(serverName: "test.local", writers: ["pub"])

    /// Mounting needs root (as CI runs); elsewhere there is nothing to mount on.
    static let canMount = getuid() == 0

    func mount(_ arguments: [String]) throws {
        let result = try runProcess("/usr/bin/mount", arguments)
        guard result.status == 0 else { throw SocketError("mount \(arguments): \(result.errors)") }
    }

    /// A fresh tmpfs of `size` for `body`, unmounted and removed after it.
    func withTmpfs(size: String, _ body: (String) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fault-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try mount(["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", directory])
        defer {
            _ = try? runProcess("/usr/bin/umount", [directory])
            try? FileManager.default.removeItem(atPath: directory)
        }
        try await body(directory)
    }

    @Test(.enabled(if: canMount, "mounting a small tmpfs needs root"))
    func aFullDiskRefusesTheWriterKeepsServingReadersAndRecoversWhenSpaceReturns() async throws {
        try await withTmpfs(size: "1m") { try await fillAndFree($0) }
    }

    func fillAndFree(_ directory: String) async throws {
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

    /// A read-only data directory (a read-only bind mount: root writes through mode bits) is refused at
    /// start with a message naming it, whether the log is still to be created or already there. (While
    /// the server runs, the kernel refuses to remount its directory read-only: the log is open for writing.)
    @Test(.enabled(if: canMount, "mounting needs root"))
    func aReadOnlyDataDirectoryIsRefusedAtStartWithWhatToFix() async throws {
        try await withTmpfs(size: "4m") { try startOnReadOnly($0) }
    }

    func startOnReadOnly(_ directory: String) throws {
        // A log written by a server that has stopped.
        let existing = directory + "/existing"
        let first = try BackgroundProcess(
            sidecarExecutable.path, ["serve", "--port", "0", "--metrics-port", "0", "--data-dir", existing])
        let started = Result { try waitUntilTrue(seconds: 30) { first.errors.contains("replication listener ready") } }
        #expect(first.terminate() == 0)
        try started.get()

        try mount(["--bind", directory, directory])
        defer { _ = try? runProcess("/usr/bin/umount", [directory]) }
        try mount(["-o", "remount,bind,ro", directory])
        for (dataDirectory, message) in [
            (existing, "the data directory \(existing) is not writable"),
            (directory + "/new", "cannot create the data directory \(directory)/new: Read-only file system"),
        ] {
            let refused = try BackgroundProcess(
                sidecarExecutable.path, ["serve", "--port", "0", "--metrics-port", "0", "--data-dir", dataDirectory])
            // Its stderr is collected as it comes: wait for the line, not only for the exit.
            do {
                try waitUntilTrue(seconds: 30) { !refused.process.isRunning && refused.errors.contains(message) }
            } catch {
                refused.terminate()
                Issue.record("expected \(message.debugDescription), got: \(refused.errors)")
                continue
            }
            #expect(refused.process.terminationStatus == 1)
            #expect(!refused.errors.contains("listener ready"))
        }
    }
}
