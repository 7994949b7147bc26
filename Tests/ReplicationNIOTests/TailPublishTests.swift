import Credentials
import Foundation
import ReplicationTestSupport
import Testing

/// `publish` and `tail` as real processes against a real server, which restarts in the middle.
@Suite(.serialized) struct TailPublishTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tail-\(UUID().uuidString)").path

    /// JSON lines for tokens in `range`; every fifth token is a batch of two rows.
    func input(_ range: ClosedRange<Int>) -> String {
        range.flatMap { token in
            (0..<(token % 5 == 0 ? 2 : 1)).map { part in
                #"{"stream": "caches", "token": \#(token), "row": ["get_user_by_id", ["@u\#(token)-\#(part):test.local"], \#(token)]}"#
            }
        }.joined(separator: "\n") + "\n"
    }

    func publish(_ text: String, port: Int, options: [String] = []) throws -> ProcessResult {
        let file = directory + "/input-\(UUID().uuidString).jsonl"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        return try runProcess(
            sidecarExecutable.path, ["publish", "--connect", "127.0.0.1:\(port)", "--name", "pub"] + options + [file])
    }

    @Test func publishAuthenticatesWithItsPasswordFile() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let credentials = directory + "/writers"
        try "pub:\(PasswordHash.make(password: "s3cret", cost: 4)!.text)\n".write(
            toFile: credentials, atomically: true, encoding: .utf8)
        for (file, secret) in [("good", "s3cret"), ("bad", "guess")] {
            try "\(secret)\n".write(toFile: directory + "/" + file, atomically: true, encoding: .utf8)
        }
        let server = try SidecarProcess(serve: ["--writer-credentials", credentials, "--in-memory"])

        let refused = try publish(input(1...3), port: server.port, options: ["--password-file", directory + "/bad"])
        #expect(refused.status == 1)
        #expect(refused.errors.contains("authentication failed"), "\(refused.errors)")
        let withoutSecret = try publish(input(1...3), port: server.port)
        #expect(withoutSecret.status == 1)
        #expect(withoutSecret.errors.contains("not authorised"), "\(withoutSecret.errors)")
        let published = try publish(input(1...3), port: server.port, options: ["--password-file", directory + "/good"])
        #expect(published.status == 0, "\(published.errors)")
        #expect(server.terminate() == 0)
    }

    @Test func aPlaintextWriterPasswordIsRefusedAtStart() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "pub:s3cret\n".write(toFile: directory + "/writers", atomically: true, encoding: .utf8)
        let result = try runProcess(
            sidecarExecutable.path, ["serve", "--writer-credentials", directory + "/writers", "--in-memory", "--port", "0"])
        #expect(result.status != 0)
        #expect(result.errors.contains("the password of pub is not a bcrypt hash"), "\(result.errors)")
        #expect(result.errors.contains("htpasswd -nB pub"), "\(result.errors)")
    }

    /// The (stream, token, row) a JSON line carries, whatever its spacing.
    func parsed(_ line: some StringProtocol) -> String {
        let object = try! JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        let row = try! JSONSerialization.data(withJSONObject: object["row"]!, options: [.sortedKeys])
        return "\(object["stream"]!) \(object["token"]!) \(String(decoding: row, as: UTF8.self))"
    }

    @Test func tailReceivesExactlyWhatPublishSentAcrossAServerRestart() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let port = try freePort()
        let server = try SidecarProcess(serve: ["--writer", "pub", "--data-dir", directory + "/data"], port: port)

        let tail = try TailProcess(["--connect", "127.0.0.1:\(port)", "--streams", "caches", "--from", "0"])
        defer { tail.stop() }

        let first = input(1...300)
        let published = try publish(first, port: port)
        #expect(published.status == 0, "\(published.errors)")
        try tail.waitForLines(360)

        // Restart the server on the same port and data; tail reconnects by itself.
        #expect(server.terminate() == 0)
        let restarted = try SidecarProcess(serve: ["--writer", "pub", "--data-dir", directory + "/data"], port: port)
        defer { _ = restarted.terminate() }
        let second = input(301...600)
        let publishedAgain = try publish(second, port: port)
        #expect(publishedAgain.status == 0, "\(publishedAgain.errors)")
        // tail reconnects with back-off (up to 30 s a wait): on a loaded machine a slow restart costs it rounds.
        try tail.waitForLines(720, seconds: 90)

        let expected = (first + second).split(separator: "\n").map { parsed($0) }
        #expect(tail.lines.map(parsed) == expected)  // every row once, in order: no gap, no duplicate
    }

    @Test func publishStopsAtARefusedRowWithItsLineNumber() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try SidecarProcess(serve: ["--writer", "pub", "--in-memory"])
        defer { _ = server.terminate() }
        let text = input(1...3) + #"{"stream": "caches", "token": 4, "row": ["too", "few"]}"# + "\n"
        let result = try publish(text, port: server.port)
        #expect(result.status == 1)
        #expect(
            result.errors.contains(
                "line 4: the server refused it: rejected RDATA caches 4: a caches row is a JSON array of 3 fields (got 2)"))
    }

    @Test func publishResumesAfterItsConnectionIsCutAtRandomPoints() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try SidecarProcess(serve: ["--writer", "pub", "--data-dir", directory + "/data"])
        defer { _ = server.terminate() }
        // Six connections cut inside lines, batches and acknowledgements; the rows and acknowledgements
        // (about 170 KB) go through more than the most the cuts can take (120 KB).
        let proxy = try CuttingProxy(target: server.port, cuts: 6, bytesBeforeCut: 200...20_000)
        defer { proxy.stop() }
        let tail = try TailProcess(["--connect", "127.0.0.1:\(server.port)", "--streams", "caches", "--from", "0"])
        defer { tail.stop() }

        let text = input(1...1_500)
        let published = try publish(text, port: proxy.port, options: ["--window", "32"])
        #expect(published.status == 0, "seed \(proxy.seed): \(published.errors)")
        #expect(proxy.cuts == 6, "seed \(proxy.seed)")
        #expect(published.errors.contains("connection lost; acknowledged through line"), "\(published.errors)")
        let expected = text.split(separator: "\n").map { parsed($0) }
        try tail.waitForLines(expected.count)
        #expect(tail.lines.map(parsed) == expected, "seed \(proxy.seed)")  // every row exactly once, in order
    }

    @Test func publishCarriesOnAcrossAServerRestart() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let port = try freePort()
        let arguments = ["--writer", "pub", "--data-dir", directory + "/data"]
        var server = try SidecarProcess(serve: arguments, port: port)
        let tail = try TailProcess(["--connect", "127.0.0.1:\(port)", "--streams", "caches", "--from", "0"])
        defer { tail.stop() }
        // The input comes through a pipe, so that the restart falls while publish is still running.
        let fifo = directory + "/rows"
        #expect(mkfifo(fifo, 0o600) == 0)
        let publisher = try BackgroundProcess(
            sidecarExecutable.path, ["publish", "--connect", "127.0.0.1:\(port)", "--name", "pub", fifo])
        defer { publisher.terminate() }
        let rows = try #require(FileHandle(forWritingAtPath: fifo))
        let first = input(1...400)
        rows.write(Data(first.utf8))
        // Every row but token 400's two, which publish holds until the next line shows the batch has ended.
        try tail.waitForLines(478)

        #expect(server.terminate() == 0)  // publish hears `ERROR server shutting down`
        server = try SidecarProcess(serve: arguments, port: port)
        defer { _ = server.terminate() }
        let second = input(401...800)
        rows.write(Data(second.utf8))
        try rows.close()
        try waitUntilTrue(seconds: 60) { !publisher.process.isRunning }
        #expect(publisher.terminate() == 0, "\(publisher.errors)")
        #expect(publisher.errors.contains("server shutting down"), "\(publisher.errors)")
        try tail.waitForLines(960, seconds: 90)  // after tail's back-off, as above
        #expect(tail.lines.map(parsed) == (first + second).split(separator: "\n").map { parsed($0) })
    }

    @Test func publishingTheSameRowsAgainIsAcknowledgedAndADifferentRowIsRefusedWithItsLine() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try SidecarProcess(serve: ["--writer", "pub", "--in-memory"])
        defer { _ = server.terminate() }
        let text = input(1...10)
        #expect(try publish(text, port: server.port).status == 0)
        let again = try publish(text, port: server.port)
        #expect(again.status == 0, "\(again.errors)")

        // Token 7 is on line 8 (token 5 has two rows).
        let changed = text.replacingOccurrences(of: "@u7-0:test.local", with: "@u7-0:other.local")
        let refused = try publish(changed, port: server.port)
        #expect(refused.status == 1)
        #expect(
            refused.errors.contains(
                "line 8: the server refused it: rejected RDATA caches 7: token must be greater than the stream's "
                    + "current token 10, or repeat what is stored: row 1 of 1 at token 7 differs from the stored row "
                    + "at byte "),
            "\(refused.errors)")
        let tail = try TailProcess(["--connect", "127.0.0.1:\(server.port)", "--streams", "caches", "--from", "0"])
        defer { tail.stop() }
        try tail.waitForLines(12)
        #expect(tail.lines.map(parsed) == text.split(separator: "\n").map { parsed($0) })  // stored once
    }

    @Test func tailExitsWithTheServersRefusal() throws {
        let server = try SidecarProcess(serve: ["--writer", "pub", "--in-memory", "--retain-rows", "1"])
        defer { _ = server.terminate() }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(try publish(input(1...3), port: server.port).status == 0)
        let refused = try runProcess(
            sidecarExecutable.path, ["tail", "--connect", "127.0.0.1:\(server.port)", "--streams", "caches", "--from", "0"])
        #expect(refused.status == 1)
        #expect(
            refused.errors.contains(
                "the server refused: failed to handle replicate: Exception('stream caches has fallen behind')"))
    }
}
