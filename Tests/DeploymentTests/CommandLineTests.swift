import Foundation
import ReplicationTestSupport
import Testing

/// The executable as an operator or a supervisor runs it: flags, environment, log formats, systemd.
@Suite struct CommandLineTests {
    @Test func versionNamesTheBuild() throws {
        let result = try runProcess(sidecarExecutable.path, ["--version"])
        #expect(result.status == 0)
        let match = try #require(
            result.output.firstMatch(
                of: #/^replication-sidecar (\d+\.\d+\.\d+) \(revision ([0-9a-f]{12}(-dirty)?|unknown)\)\n$/#),
            "\(result.output)")
        // Built from this checkout: its commit, as git says now (RevisionPlugin runs before every build).
        let head = try runProcess("/usr/bin/git", ["-C", repositoryRoot.path, "rev-parse", "--short=12", "HEAD"])
        if head.status == 0 {
            let commit = head.output.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(
                match.output.2.hasPrefix(commit),
                "built from \(match.output.2), HEAD is \(commit): was the executable built before a commit (--skip-build)?")
        }
        // The running server exports the same build.
        let sidecar = try SidecarProcess(serve: ["--in-memory"])
        defer { _ = sidecar.terminate() }
        let metrics = try LineSocket(port: sidecar.metricsPort).http("GET", "/metrics").text
        #expect(
            metrics.contains(
                "replication_sidecar_build_info{revision=\"\(match.output.2)\",version=\"\(match.output.1)\"} 1"))
    }

    @Test func environmentVariablesStandInForFlags() throws {
        let environment = [
            "REPLICATION_SIDECAR_SERVER_NAME": "env.local",
            "REPLICATION_SIDECAR_WEB_LISTEN_ADDRESS": "localhost:0",
            "REPLICATION_SIDECAR_WEB_TELEMETRY_PATH": "/internal/metrics",
            "REPLICATION_SIDECAR_IN_MEMORY": "true",
            "REPLICATION_SIDECAR_WRITER": "pub,other",
            "REPLICATION_SIDECAR_LOG_FORMAT": "json",
        ]
        let sidecar = try SidecarProcess(serve: [], environment: environment)
        defer { _ = sidecar.terminate() }
        #expect(try LineSocket(port: sidecar.port).readLine() == "SERVER env.local")
        let endpoint = try LineSocket(port: sidecar.metricsPort)
        #expect(try endpoint.http("GET", "/internal/metrics").text.contains("replication_sidecar_build_info"))
        #expect(try endpoint.http("GET", "/metrics").status == 404)
        // Both writers were allowed: a row from either is acknowledged.
        for writer in ["pub", "other"] {
            let connection = try LineSocket(port: sidecar.port)
            try connection.send("NAME \(writer)\nPOSITION events \(writer == "pub" ? 1 : 2)\n")
            #expect(
                try connection.readLines { $0.hasPrefix("POSITION") || $0.hasPrefix("ERROR") }.last?.hasPrefix(
                    "POSITION") == true)
        }
        // Every line is one JSON object.
        let lines = sidecar.startupLog.split(separator: "\n")
        #expect(lines.count >= 2)
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["msg"] is String && object?["level"] is String, "not a JSON log line: \(line)")
        }

        // A flag on the command line wins over its variable.
        let overridden = try SidecarProcess(serve: ["--server-name", "cli.local"], environment: environment)
        defer { _ = overridden.terminate() }
        #expect(try LineSocket(port: overridden.port).readLine() == "SERVER cli.local")
    }

    @Test(arguments: [("[::1]:0", "address=::1 "), (":0", "address=0.0.0.0 "), ("localhost:0", "address=localhost ")])
    func listenAddressForms(argument: String, logged: String) throws {
        let sidecar = try SidecarProcess(serve: ["--in-memory", "--web.listen-address", argument])
        defer { _ = sidecar.terminate() }
        let line = try #require(sidecar.startupLog.split(separator: "\n").first { $0.contains("metrics endpoint ready") })
        #expect(line.contains(logged), "\(line)")
        #expect(sidecar.metricsPort > 0)
        if !argument.hasPrefix("[") {  // reachable on 127.0.0.1
            #expect(try LineSocket(port: sidecar.metricsPort).http("GET", "/healthz").status == 200)
        }
    }

    @Test(arguments: [
        (["--web.listen-address", "nonsense"], "--web.listen-address must be [HOST]:PORT"),
        (["--web.listen-address", "::1:9469"], "--web.listen-address must be [HOST]:PORT"),
        (["--web.listen-address", "127.0.0.1:0", "--metrics-port", "0"], "give one or the other"),
        (["--web.telemetry-path", "/healthz"], "--web.telemetry-path must be a path"),
        (["--log-format", "xml"], "--log-format must be logfmt or json"),
        (["--log-level", "loud"], "--log-level must be one of"),
        (["--max-token-step", "0"], "--max-token-step must be at least 1, got 0"),
        (["--ping-timeout-ms", "5000"], "--ping-timeout-ms must be above 5000"),
        (["--metrics-header-timeout", "0"], "--metrics-header-timeout must be positive"),
        (["--in-memory", "--web.listen-address", "no-such-host.invalid:0"], "does not resolve"),
        (["REPLICATION_SIDECAR_LOG_FORMAT=yaml"], "--log-format must be logfmt or json"),
        (["REPLICATION_SIDECAR_IN_MEMORY=maybe"], "'--in-memory' does not take any value"),
    ])
    func badFlagsExitWithAMessage(arguments: [String], message: String) throws {
        let variables = arguments.filter { $0.hasPrefix("REPLICATION_SIDECAR_") }
        let flags = arguments.filter { !$0.hasPrefix("REPLICATION_SIDECAR_") }
        // Each case fails before anything listens (no default port is taken) or a data directory is made.
        let result = try runProcess(
            "/usr/bin/env", variables + [sidecarExecutable.path, "serve", "--port", "0"] + flags)
        #expect(result.status != 0)
        #expect(result.errors.contains(message), "\(result.errors)")
        for variable in variables {
            let name = variable.prefix { $0 != "=" }
            #expect(result.errors.contains("flags taken from the environment: \(name)"), "\(result.errors)")
        }
    }

    /// systemd's side of `Type=notify`: a datagram socket named by `NOTIFY_SOCKET`, a path or (`@…`) an
    /// abstract name.
    @Test(arguments: [false, true])
    func systemdHearsReadyOnceBothListenersAreUpAndStoppingOnShutdown(abstract: Bool) throws {
        let socket = try NotifySocket(abstract: abstract)
        let sidecar = try SidecarProcess(serve: ["--in-memory"], environment: ["NOTIFY_SOCKET": socket.name])
        #expect(try socket.receive() == "READY=1")
        // READY=1 comes after both listeners are up.
        #expect(try LineSocket(port: sidecar.metricsPort).http("GET", "/readyz").status == 200)
        #expect(try LineSocket(port: sidecar.port).readLine() == "SERVER localhost")
        #expect(sidecar.terminate() == 0)
        #expect(try socket.receive() == "STOPPING=1")
    }
}

/// A bound `AF_UNIX` datagram socket standing in for systemd's notification socket.
final class NotifySocket {
    let name: String
    private let descriptor: Int32
    private let path: String?

    init(abstract: Bool) throws {
        let unique = "replication-sidecar-notify-\(UUID().uuidString.prefix(8))"
        path = abstract ? nil : FileManager.default.temporaryDirectory.appendingPathComponent(unique).path
        name = path ?? "@" + unique
        descriptor = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard descriptor >= 0 else { throw SocketError("socket: \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        if abstract { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
        }
        guard bound == 0 else { throw SocketError("bind \(name): \(errno)") }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)  // a deadline, not a pause: receive returns at once when sent
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next datagram, or an error after the deadline.
    func receive() throws -> String {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
        guard count >= 0 else { throw SocketError("no notification on \(name) within 30 s") }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }

    deinit {
        close(descriptor)
        if let path { unlink(path) }
    }
}
