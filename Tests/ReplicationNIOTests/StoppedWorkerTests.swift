import Foundation
import ReplicationTestSupport
import Testing

/// A worker process frozen with SIGSTOP, against the real executable: the other connections are served
/// as before; the frozen one is sent `ERROR ping timeout` once its pings stop and, as it cannot close its
/// end, is aborted after the grace (counted as `ConnectionAborted`). Thawed, it reads the `ERROR` and exits 1
/// (`tail` stops on a refusal), and a new one from its last token gets the rest: every row exactly once.
@Suite struct StoppedWorkerTests {
    func metrics(_ server: SidecarProcess) throws -> String {
        try runProcess("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(server.metricsPort)/metrics"]).output
    }

    func row(_ token: Int) -> String { #"["ev", ["$\#(token)", "!r", "m.room.message", null, null, null]]"# }

    func publish(_ writer: LineSocket, _ tokens: ClosedRange<Int>) throws {
        for token in tokens {
            try writer.send("RDATA events \(token) \(row(token))\n")
            #expect(try nextRow(writer) == "POSITION events \(token)")
        }
    }

    /// The next line that is not the server's keepalive `PING` (sent every second here).
    func nextRow(_ socket: LineSocket) throws -> String? {
        while let line = try socket.readLine() {
            if !line.hasPrefix("PING ") { return line }
        }
        return nil
    }

    func connect(_ port: Int, name: String) throws -> LineSocket {
        let socket = try LineSocket(port: port)
        _ = try socket.readLines(2)
        try socket.send("NAME \(name)\n")
        return socket
    }

    @Test func aStoppedWorkerIsTimedOutAloneAndAWorkerFromItsLastTokenGetsTheRest() throws {
        let server = try SidecarProcess(
            serve: ["--writer", "pub", "--in-memory", "--ping-interval-ms", "1000", "--ping-timeout-ms", "12000"])
        defer { _ = server.terminate() }
        let tail = try TailProcess(
            ["--connect", "127.0.0.1:\(server.port)", "--streams", "events", "--from", "0", "--name", "frozen"])
        defer { tail.stop() }
        let writer = try connect(server.port, name: "pub")
        let other = try connect(server.port, name: "other")
        try other.send("REPLICATE events 0\n")
        #expect(try other.readLine() == "POSITION events 0")
        // The timeout is over twice the client's 5 s ping interval: a worker that runs is never timed out.

        try publish(writer, 1...20)
        try tail.waitForLines(20)
        // Only a peer that has pinged is timed out: wait for the worker's first PING.
        do {
            try waitUntilTrue(seconds: 60) {
                (try? metrics(server))?.contains(#"inbound_commands_total{command="PING",name="frozen"}"#) == true
            }
        } catch {
            Issue.record("no PING from the worker on port \(server.metricsPort): \((try? metrics(server)) ?? "no scrape")")
            throw error
        }

        #expect(kill(tail.processIdentifier, SIGSTOP) == 0)
        defer { kill(tail.processIdentifier, SIGCONT) }  // runs before tail.stop(): a stopped process ignores SIGTERM
        try publish(writer, 21...40)
        for token in 1...40 { #expect(try nextRow(other) == "RDATA events \(token) \(row(token))") }
        let timedOut = [
            #"outbound_commands_total{command="ERROR",name="frozen"} 1"#,
            #"close_reason_total{reason_type="ConnectionAborted"} 1"#,
        ]
        do {
            try waitUntilTrue(seconds: 90) {
                let text = (try? metrics(server)) ?? ""
                return timedOut.allSatisfy { text.contains($0) }
            }
        } catch {
            Issue.record("the frozen worker was not timed out and aborted: \((try? metrics(server)) ?? "no scrape")")
            throw error
        }
        try publish(writer, 41...50)
        for token in 41...50 { #expect(try nextRow(other) == "RDATA events \(token) \(row(token))") }

        #expect(kill(tail.processIdentifier, SIGCONT) == 0)
        do {
            try waitUntilTrue(seconds: 60) { tail.exitStatus != nil }
        } catch {
            Issue.record("the thawed worker did not exit after the ERROR: \(tail.lines.count) lines")
            throw error
        }
        #expect(tail.exitStatus == 1)
        #expect(tokens(tail) == Array(1...20))
        let resumed = try TailProcess(
            ["--connect", "127.0.0.1:\(server.port)", "--streams", "events", "--from", "20", "--name", "frozen"])
        defer { resumed.stop() }
        try resumed.waitForLines(30, seconds: 60)
        #expect(tokens(tail) + tokens(resumed) == Array(1...50))  // every row exactly once, in order
    }

    func tokens(_ tail: TailProcess) -> [Int] {
        tail.lines.compactMap { line in line.firstMatch(of: /"token": ?(\d+)/).flatMap { Int($0.output.1) } }
    }
}
