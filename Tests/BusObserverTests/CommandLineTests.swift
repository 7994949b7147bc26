import Foundation
import ReplicationCore
import ReplicationMetrics
import ReplicationTestSupport
import Testing

/// `observe` and `tail --redis` as an operator runs them, against a real Redis.
@Suite(.serialized) struct CommandLineTests {
    @Test func observeExportsTheBusAndPromtoolAcceptsIt() async throws {
        let redis = try RedisServer()
        let observe = try BackgroundProcess(
            sidecarExecutable.path,
            [
                "observe", "--redis", redis.url, "--server-name", "modern.test", "--metrics-port", "0",
                "--probe-interval", "0",
            ])
        defer { observe.terminate() }
        try await waitUntil(seconds: 30) { observe.loggedNumber("port", inLineWith: "metrics endpoint ready") != nil }
        let port = observe.loggedNumber("port", inLineWith: "metrics endpoint ready")!
        try await waitUntil(seconds: 15) {
            (try? redis.cli(["PUBSUB", "NUMSUB", "modern.test"])) == "modern.test\n1\n"
        }
        for message in ObserverTests.sample { try redis.cli(["PUBLISH", "modern.test", message]) }
        var body = ""
        try await waitUntil(seconds: 15) {
            guard let socket = try? LineSocket(port: port) else { return false }
            defer { socket.close() }
            body = (try? socket.http("GET", "/metrics").text) ?? ""
            return body.contains("replication_sidecar_bus_commands_total{command=\"POSITION\"} 18")
        }
        #expect(
            body.contains("replication_sidecar_bus_stream_position{instance=\"master\",stream_name=\"events\"} 20\n"))
        #expect(body.contains("replication_sidecar_bus_rows_total{instance=\"master\",stream_name=\"events\"} 15\n"))
        #expect(body.contains("replication_sidecar_bus_malformed_messages_total{reason=\"bad_json\"} 0\n"))
        #expect(body.contains("replication_sidecar_redis_connected{role=\"subscriber\"} 1\n"))
        for family in BusMetricFamilies.all { #expect(body.contains("# TYPE \(family.sampleName) "), "\(family.name)") }
        let promtool = try runProcess("/usr/bin/promtool", ["check", "metrics"], input: body)
        #expect(
            promtool.status == 0 && promtool.output.isEmpty && promtool.errors.isEmpty,
            "\(promtool.output)\(promtool.errors)")

        // The page at / shows every writer, with names publishers chose as text, never markup.
        try redis.cli(["PUBLISH", "modern.test", "POSITION events <b>w1</b> 3 3"])
        func get(_ path: String) throws -> HTTPResponse {
            let socket = try LineSocket(port: port)
            defer { socket.close() }
            return try socket.http("GET", path)
        }
        try await waitUntil { (try? get("/").text.contains("&lt;b&gt;w1&lt;/b&gt;")) == true }
        let page = try get("/").text
        #expect(page.contains("<td>events</td><td>master</td><td>20</td><td>15</td><td>0</td>"), "\(page)")
        #expect(!page.contains("<b>w1</b>"))
        // Ready while subscribed; not while Redis is away, yet still alive.
        #expect(try get("/readyz").status == 200)
        redis.stop()
        try await waitUntil(seconds: 15) { (try? get("/readyz").status) == 503 }
        #expect(try get("/healthz").status == 200)
        #expect(observe.terminate() == 0)
    }

    @Test func tailPrintsRowsWithTheirInstanceAndCommandsWhenAsked() async throws {
        let redis = try RedisServer()
        let tail = try BackgroundProcess(
            sidecarExecutable.path,
            ["tail", "--redis", redis.url, "--server-name", "modern.test", "--streams", "events,typing"])
        let commands = try BackgroundProcess(
            sidecarExecutable.path, ["tail", "--redis", redis.url, "--server-name", "modern.test", "--commands"])
        defer {
            tail.terminate()
            commands.terminate()
        }
        try await waitUntil(seconds: 30) {
            (try? redis.cli(["PUBSUB", "NUMSUB", "modern.test"])) == "modern.test\n2\n"
        }
        for message in ObserverTests.sample + ["USER_SYNC w1 @a:h None start 1", "NOT_A_COMMAND \u{7}"] {
            try redis.cli(["PUBLISH", "modern.test", message])
        }
        try await waitUntil { commands.output.contains("NOT_A_COMMAND") && tail.output.contains("\"typing\"") }
        let rows = tail.output.split(separator: "\n")
        #expect(rows.count == 16)  // 15 events rows, 1 typing row
        #expect(
            rows[0]
                == #"{"stream": "events", "instance": "master", "token": 12, "row": ["ev",["$tWBbCo0npWe7maho3TMA0ip1Mo864QyDzIFIGIZOQXk","!tWBbCo0npWe7maho3TMA0ip1Mo864QyDzIFIGIZOQXk","m.room.create","",null,null,null,0,0]]}"#
        )
        #expect(
            rows.last
                == #"{"stream": "typing", "instance": "master", "token": 1, "row": ["!tWBbCo0npWe7maho3TMA0ip1Mo864QyDzIFIGIZOQXk",["@carol2:modern.test"]]}"#
        )
        for row in rows { _ = try JSONSerialization.jsonObject(with: Data(row.utf8)) }
        let lines = commands.output.split(separator: "\n")
        #expect(lines.contains(#"{"command": "POSITION", "arguments": "events master 20 20"}"#))
        #expect(lines.contains(#"{"command": "USER_SYNC", "arguments": "w1 @a:h None start 1"}"#))
        #expect(lines.last == #"{"malformed": "unknown_command", "message": "NOT_A_COMMAND \u0007"}"#)
        #expect(lines.count == ObserverTests.sample.count + 2)
        #expect(tail.terminate() == 0)
    }

    @Test func tailFollowsARedisOverTLSAndSaysWhyAnUntrustedOneIsRefused() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tail-tls-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let certificates = try TestCertificates(in: directory.appendingPathComponent("server").path)
        let otherCA = try TestCertificates(in: directory.appendingPathComponent("other").path)
        let redis = try RedisServer(tls: certificates)
        let tail = try BackgroundProcess(
            sidecarExecutable.path,
            [
                "tail", "--redis", redis.url, "--redis-ca", certificates.caCertificate, "--server-name", "modern.test",
                "--commands",
            ])
        let refused = try BackgroundProcess(
            sidecarExecutable.path,
            ["tail", "--redis", redis.url, "--redis-ca", otherCA.caCertificate, "--server-name", "modern.test"])
        defer {
            tail.terminate()
            refused.terminate()
        }
        try await waitUntil(seconds: 30) {
            (try? redis.cli(["PUBSUB", "NUMSUB", "modern.test"])) == "modern.test\n1\n"
        }
        try redis.cli(["PUBLISH", "modern.test", "POSITION events master 20 20"])
        try await waitUntil(seconds: 30) { tail.output.contains("POSITION") }
        #expect(tail.output == #"{"command": "POSITION", "arguments": "events master 20 20"}"# + "\n")
        #expect(tail.errors.contains("subscribed to modern.test and modern.test/USER_IP on rediss://127.0.0.1:"))
        try await waitUntil(seconds: 30) { refused.errors.contains("reconnecting in") }
        #expect(refused.errors.contains("CERTIFICATE_VERIFY_FAILED"), "\(refused.errors)")
        #expect(tail.terminate() == 0)
    }

    @Test func badFlagsSayWhatToFix() throws {
        for (arguments, hint) in [
            (["observe", "--redis", "http://x", "--server-name", "h"], "must start with redis:// or rediss://"),
            (["observe", "--redis-ca", "/etc/hostname", "--server-name", "h"], "--redis-ca need --redis URL"),
            (
                ["observe", "--redis", "redis://h:1", "--server-name", "h", "--redis-ca", "/etc/hostname"],
                "--redis-ca: a CA file needs a rediss:// URL"
            ),
            (
                ["tail", "--redis", "rediss://h:1", "--server-name", "h", "--redis-ca", "/nonexistent"],
                "--redis-ca: cannot read the CA certificates in '/nonexistent'"
            ),
            (["observe", "--redis", "redis://h:1"], "--server-name"),
            (
                ["observe", "--redis", "redis://h:1", "--server-name", "h", "--redis-password-file", "/nonexistent"],
                "cannot read"
            ),
            (
                ["observe", "--redis", "redis://h:1", "--server-name", "h", "--probe-interval", "-1"],
                "--probe-interval"
            ),
            (["tail", "--server-name", "h"], "either --connect"),
            (["tail", "--connect", "127.0.0.1:1", "--commands"], "--commands needs --redis"),
            (["tail", "--redis", "redis://h:1", "--server-name", "h", "--from", "5"], "--connect only"),
        ] {
            let result = try runProcess(sidecarExecutable.path, arguments)
            #expect(result.status != 0)
            #expect(result.errors.contains(hint), "\(arguments): \(result.errors)")
        }
    }
}
