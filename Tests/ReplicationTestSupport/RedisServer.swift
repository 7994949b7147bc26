import Foundation

/// A real `redis-server` on 127.0.0.1, on a port that was free, with its files in a temporary directory.
/// It can be stopped and started again on the same port (a Redis restart under a client).
public final class RedisServer: @unchecked Sendable {  // driven by one test at a time
    public private(set) var port = 0
    public let directory: URL
    private let password: String?
    /// Whether every write is in the append-only file, fsynced before Redis answers it.
    private let appendOnly: Bool
    private var process: Process?

    /// The port of the Redis this one replicates (`--replicaof`).
    private let primaryPort: Int?
    /// With TLS: the only port is the TLS one, with these certificates; clients show none.
    public let certificates: TestCertificates?

    public init(
        password: String? = nil, appendOnly: Bool = false, replicaOf primaryPort: Int? = nil,
        tls certificates: TestCertificates? = nil
    ) throws {
        self.password = password
        self.appendOnly = appendOnly
        self.primaryPort = primaryPort
        self.certificates = certificates
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // Another test may take the port between freePort() and Redis binding it: try a few.
        for _ in 0..<5 {
            port = try freePort()
            if (try? start()) != nil { return }
        }
        throw SocketError("redis-server did not start: \(log)")
    }

    public var url: String {
        (certificates == nil ? "redis://" : "rediss://") + (password.map { ":\($0)@" } ?? "") + "127.0.0.1:\(port)"
    }

    public var log: String {
        (try? String(contentsOf: directory.appendingPathComponent("redis.log"), encoding: .utf8)) ?? ""
    }

    /// Starts it on its port and waits until it answers.
    public func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        let ports =
            certificates.map {
                [
                    "--port", "0", "--tls-port", "\(port)", "--tls-cert-file", $0.serverCertificate,
                    "--tls-key-file", $0.serverKey, "--tls-ca-cert-file", $0.caCertificate, "--tls-auth-clients", "no",
                ]
            } ?? ["--port", "\(port)"]
        process.arguments =
            ports + [
                "--bind", "127.0.0.1", "--save", "", "--appendonly", appendOnly ? "yes" : "no",
                "--appendfsync", "always", "--dir", directory.path,
                "--logfile", directory.appendingPathComponent("redis.log").path, "--enable-debug-command", "yes",
            ] + (password.map { ["--requirepass", $0] } ?? [])
            + (primaryPort.map { ["--replicaof", "127.0.0.1", "\($0)"] } ?? [])
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        do {
            try waitUntilTrue(seconds: 30) {
                guard process.isRunning else { return true }
                if certificates != nil { return (try? cli(["PING"])) == "PONG\n" }
                guard let socket = try? LineSocket(port: port) else { return false }
                defer { socket.close() }
                return (try? socket.send("PING\r\n")) != nil && (try? socket.readLine(timeoutMillis: 1_000)) != nil
            }
        } catch {
            stop()
            throw error
        }
        guard process.isRunning else { throw SocketError("redis-server exited: \(log)") }
    }

    /// SIGKILL, and waits for it to exit: an outage as abrupt as a crash. (Not SIGTERM: a child started from
    /// a test thread inherits that thread's blocked signals, SIGTERM among them.)
    public func stop() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Runs `redis-cli` against it (e.g. `PUBLISH channel message`) and returns what it printed.
    @discardableResult
    public func cli(_ arguments: [String]) throws -> String {
        let result = try runProcess(
            "/usr/bin/redis-cli",
            ["-h", "127.0.0.1", "-p", "\(port)"] + (certificates.map { ["--tls", "--cacert", $0.caCertificate] } ?? [])
                + (password.map { ["-a", $0, "--no-auth-warning"] } ?? []) + arguments)
        guard result.status == 0 else { throw SocketError("redis-cli \(arguments): \(result.errors)") }
        return result.output
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
