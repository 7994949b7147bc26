import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ReplicationCore
import ReplicationMetrics
import ReplicationNIO
import StreamLog

/// The stream log: append throughput with group commit (SQLite `full` and `normal` beside the in-memory
/// log), and catch-up of a long log to one client over loopback, with the process's memory before and after.
struct LogBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log", abstract: "Append and catch-up throughput of the durable log beside the in-memory one.")

    @Option(help: "Rows appended in the append benchmark (one row per batch, pipelined like a writer's stream).")
    var appends = 100_000

    @Option(help: "Rows in the log a client catches up from.")
    var catchUpRows = 1_000_000

    @Option(help: "Scratch directory for the SQLite files (removed afterwards).")
    var directory = FileManager.default.temporaryDirectory.appendingPathComponent("replication-bench-log").path

    func run() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        try? FileManager.default.removeItem(atPath: directory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let row = #"["ev", ["$1-abcdefghijklmnop:test.local", "!room1:test.local", "m.room.message", null, null, null]]"#

        print("append throughput, \(appends) one-row batches:")
        let memory = try await appendRate(InMemoryStreamLog(retainRows: appends), row: row, loop: loop)
        print(String(format: "  in-memory        %10.0f rows/s", memory))
        for mode in SQLiteStreamLog.SyncMode.allCases {
            let log = try SQLiteStreamLog(
                directory: directory + "/append-\(mode.rawValue)", sync: mode, clock: { ConnectionClock.system.wallMillis })
            let rate = try await appendRate(log, row: row, loop: loop)
            print("  " + padded("sqlite sync=" + mode.rawValue, 19) + String(format: "%10.0f rows/s  (%.2fx of in-memory)", rate, rate / memory))
        }

        print("catch-up of \(catchUpRows) rows to one client over loopback:")
        let durable = try SQLiteStreamLog(
            directory: directory + "/catch-up", sync: .normal, clock: { ConnectionClock.system.wallMillis })
        _ = try await fill(durable, rows: catchUpRows, row: row, loop: loop)
        let inMemory = InMemoryStreamLog(retainRows: catchUpRows)
        _ = try await fill(inMemory, rows: catchUpRows, row: row, loop: loop)
        let memoryRate = try await catchUpRate(inMemory, label: "in-memory")
        let durableRate = try await catchUpRate(durable, label: "sqlite")
        print(String(format: "  ratio sqlite/in-memory: %.2fx", durableRate / memoryRate))
    }

    private func appendRate(_ log: any StreamLog, row: String, loop: any EventLoop) async throws -> Double {
        let started = Date()
        try await fill(log, rows: appends, row: row, loop: loop)
        return Double(appends) / Date().timeIntervalSince(started)
    }

    /// Appends without waiting for each acknowledgement (as a writer streams RDATA), then waits for the last.
    @discardableResult
    private func fill(_ log: any StreamLog, rows: Int, row: String, loop: any EventLoop) async throws -> Int64 {
        var last: EventLoopFuture<AppendedBatch>?
        for token in 1...rows {
            last = log.append([row], to: .events, token: .exactly(Int64(token)), on: loop)
            if token % 10_000 == 0 { _ = try await last!.get() }  // keep the queue bounded
        }
        return try await last!.get().token
    }

    private func catchUpRate(_ log: any StreamLog, label: String) async throws -> Double {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let server = ReplicationServer(
            configuration: ServerConfiguration(host: "127.0.0.1", port: 0), log: log,
            group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        let address = try await server.start()
        let residentBefore = ProcessStatistics.current()?.residentBytes ?? 0
        let started = Date()
        let (lines, peakResident) = try countLines(port: address.port!, request: "NAME bench\nREPLICATE events 0\n")
        let elapsed = Date().timeIntervalSince(started)
        try await server.shutDown()
        let rate = Double(lines - 1) / elapsed
        print(
            "  " + padded(label, 12)
                + String(
                    format: "%10.0f rows/s, %.2f s; resident memory %.0f MiB before, %.0f MiB at most during", rate, elapsed,
                    residentBefore / 1_048_576, peakResident / 1_048_576))
        return rate
    }

    /// Connects, sends `request`, and counts lines up to and including the first `POSITION`.
    private func countLines(port: Int, request: String) throws -> (Int, Double) {
        let fd = try LoopbackSocket.connect(port: port)
        defer { close(fd) }
        try LoopbackSocket.sendAll(fd, request)
        var lines = 0
        var peak = 0.0
        var lineStart = true
        var positionSeen = false
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var chunks = 0
        while !positionSeen {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { break }
            for byte in buffer[0..<count] {
                if lineStart, lines >= 2, byte == UInt8(ascii: "P") { positionSeen = true }
                lineStart = byte == 0x0A
                if lineStart { lines += 1 }
            }
            chunks += 1
            if chunks % 256 == 0 { peak = max(peak, ProcessStatistics.current()?.residentBytes ?? 0) }
        }
        // The greeting's two lines (SERVER, PING) are not rows.
        return (lines - 2, peak)
    }
}
