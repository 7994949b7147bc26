import Credentials
import Foundation
import Logging
import MetricsExporter
import ReplicationTestSupport
import Synchronization
import Testing

/// A source with fixed content that records what the endpoint asked of it.
final class FakeSource: MetricsSource {
    let healthy = Mutex(true)
    let ready = Mutex(true)
    let failing = Mutex(false)
    let finished = Mutex<[Bool]>([])
    let slowClientsClosed = Atomic(0)

    func scrape(openMetrics: Bool) throws -> (body: String, contentType: String) {
        struct Broken: Error {}
        if failing.withLock({ $0 }) { throw Broken() }
        let body = String(repeating: "# HELP x_total A counter.\n", count: 200) + "x_total 1\n"
        return openMetrics
            ? (body + "# EOF\n", "application/openmetrics-text; version=1.0.0; charset=utf-8")
            : (body, "text/plain; version=0.0.4; charset=utf-8")
    }

    func scrapeFinished(seconds: Double, failed: Bool) { finished.withLock { $0.append(failed) } }
    func slowClientClosed() { slowClientsClosed.add(1, ordering: .relaxed) }
    var isHealthy: Bool { healthy.withLock { $0 } }
    var isReady: Bool { ready.withLock { $0 } }
    func statusPage(telemetryPath: String) -> String { "<p><a href=\"\(telemetryPath)\">Metrics</a></p>" }
}

/// A monotonic clock that moves only when told to.
final class ManualSeconds: Sendable {
    private let value = Mutex(1_000.0)
    var now: Double { value.withLock { $0 } }
    func advance(by seconds: Double) { value.withLock { $0 += seconds } }
}

/// A started endpoint on 127.0.0.1 with a free port, stopped when released.
final class Endpoint {
    let server: MetricsHTTPServer
    let port: Int
    let source = FakeSource()

    /// Every scrape collects unless `configure` sets a body age; `clock` then decides what is recent.
    init(
        clock: ManualSeconds? = nil, logger: Logger = Logger(label: "test-endpoint"),
        _ configure: (inout ExporterConfiguration) -> Void = { _ in }
    ) throws {
        var configuration = ExporterConfiguration(host: "127.0.0.1", port: 0, maxBodyAgeSeconds: 0)
        configure(&configuration)
        let now: @Sendable () -> Double
        if let clock { now = { clock.now } } else { now = monotonicSeconds }
        server = MetricsHTTPServer(configuration: configuration, source: source, now: now, logger: logger)
        port = try server.start()
    }

    deinit { server.stop() }

    func connect() throws -> LineSocket { try LineSocket(port: port) }
}

@Suite struct HTTPEndpointTests {
    @Test func servesTheTextFormatWithKeepAlive() throws {
        let endpoint = try Endpoint()
        let client = try endpoint.connect()
        for _ in 0..<3 {  // the same connection answers every request
            let response = try client.http("GET", "/metrics")
            #expect(response.status == 200)
            #expect(response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
            #expect(response.text.hasSuffix("x_total 1\n"))
        }
        #expect(endpoint.source.finished.withLock { $0 } == [false, false, false])
    }

    @Test func scrapesCloseTogetherShareOneCollectionPerFormatAndEncoding() throws {
        let clock = ManualSeconds()
        let endpoint = try Endpoint(clock: clock) { $0.maxBodyAgeSeconds = 0.25 }
        let client = try endpoint.connect()
        func collections() -> Int { endpoint.source.finished.withLock { $0.count } }

        let first = try client.http("GET", "/metrics")
        clock.advance(by: 0.2)
        let reused = try client.http("GET", "/metrics")
        #expect(collections() == 1)
        #expect(reused.body == first.body)
        #expect(reused.headers["content-type"] == first.headers["content-type"])

        let openMetrics = try client.http("GET", "/metrics", headers: ["Accept": "application/openmetrics-text"])
        #expect(openMetrics.text.hasSuffix("# EOF\n"))
        let zipped = try client.http("GET", "/metrics", headers: ["Accept-Encoding": "gzip"])
        #expect(zipped.headers["content-encoding"] == "gzip")
        #expect(collections() == 3)

        clock.advance(by: 0.05)  // the first body is now 0.25 s old: too old to serve again
        #expect(try client.http("GET", "/metrics").body == first.body)
        #expect(collections() == 4)
    }

    @Test func servesOpenMetricsWhenAskedFor() throws {
        let endpoint = try Endpoint()
        let response = try endpoint.connect().http(
            "GET", "/metrics", headers: ["Accept": "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"])
        #expect(response.headers["content-type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8")
        #expect(response.text.hasSuffix("# EOF\n"))
    }

    @Test func qualityValuesDecideFormatAndEncoding() throws {
        let endpoint = try Endpoint()
        let client = try endpoint.connect()
        func contentType(_ accept: String) throws -> String? {
            try client.http("GET", "/metrics", headers: ["Accept": accept]).headers["content-type"]
        }
        let text = "text/plain; version=0.0.4; charset=utf-8"
        let openMetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8"
        // What Prometheus 2.x sends, and the same with the preference turned around.
        #expect(
            try contentType(
                "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
                    + "text/plain;version=0.0.4;q=0.3,*/*;q=0.2") == openMetrics)
        #expect(try contentType("application/openmetrics-text;q=0.2, text/plain;q=0.9") == text)
        #expect(try contentType("application/openmetrics-text;q=0") == text)
        #expect(try contentType("application/openmetrics-text; q=0.0, */*") == text)
        #expect(try contentType("*/*") == text)
        #expect(try contentType("text/*;q=0.1, application/openmetrics-text") == openMetrics)

        func encoding(_ acceptEncoding: String) throws -> String? {
            try client.http("GET", "/metrics", headers: ["Accept-Encoding": acceptEncoding]).headers["content-encoding"]
        }
        #expect(try encoding("gzip;q=0") == nil)
        #expect(try encoding("gzip;q=0, deflate") == nil)
        #expect(try encoding("deflate, gzip;q=0.5") == "gzip")
        #expect(try encoding("*") == "gzip")
        #expect(try encoding("*;q=0") == nil)
        #expect(try encoding("identity") == nil)
    }

    @Test func servesMetricsAtTheTelemetryPath() throws {
        let endpoint = try Endpoint { $0.telemetryPath = "/internal/metrics" }
        let client = try endpoint.connect()
        #expect(try client.http("GET", "/internal/metrics").text.hasSuffix("x_total 1\n"))
        #expect(try client.http("GET", "/metrics").status == 404)
        #expect(try client.http("GET", "/").text.contains(#"href="/internal/metrics""#))
    }

    @Test func listensOnAResolvedHostName() throws {
        let endpoint = try Endpoint { $0.host = "localhost" }
        #expect(try endpoint.connect().http("GET", "/healthz").status == 200)
        var unknown = ExporterConfiguration(host: "no-such-host.invalid", port: 0)
        unknown.maxBodyAgeSeconds = 0
        #expect(throws: ExporterError.self) { try MetricsHTTPServer(configuration: unknown, source: FakeSource()).start() }
    }

    @Test func compressesWhenTheClientAcceptsGzip() throws {
        let endpoint = try Endpoint()
        let client = try endpoint.connect()
        let plain = try client.http("GET", "/metrics")
        let zipped = try client.http("GET", "/metrics", headers: ["Accept-Encoding": "gzip, deflate"])
        #expect(zipped.headers["content-encoding"] == "gzip")
        #expect(Array(zipped.body.prefix(2)) == [0x1F, 0x8B])
        let unzipped = try runProcess("/bin/sh", ["-c", "base64 -d | gzip -dc"], input: Data(zipped.body).base64EncodedString())
        #expect(unzipped.output == plain.text)
        #expect(zipped.body.count < plain.body.count / 5)
    }

    @Test func headGetsHeadersOnly() throws {
        let endpoint = try Endpoint()
        let client = try endpoint.connect()
        let head = try client.http("HEAD", "/metrics")
        #expect(head.status == 200 && head.body.isEmpty)
        #expect(head.headers["content-length"] == String(try client.http("GET", "/metrics").body.count))
    }

    @Test func otherMethodsAndPaths() throws {
        let endpoint = try Endpoint()
        let client = try endpoint.connect()
        let post = try client.http("POST", "/metrics", body: "a=1&b=2")
        #expect(post.status == 405 && post.headers["allow"] == "GET, HEAD")
        #expect(try client.http("GET", "/nope").status == 404)
        let landing = try client.http("GET", "/")
        #expect(landing.status == 200 && landing.text.contains(#"href="/metrics""#))
        #expect(try client.http("GET", "/healthz").text == "ok\n")
        #expect(try client.http("GET", "/readyz").text == "ok\n")
        endpoint.source.ready.withLock { $0 = false }
        #expect(try client.http("GET", "/readyz").status == 503)
        #expect(try client.http("GET", "/healthz").status == 200)
        endpoint.source.healthy.withLock { $0 = false }
        #expect(try client.http("GET", "/healthz").status == 503)
    }

    @Test func aFailingScrapeIsA500AndCounted() throws {
        let endpoint = try Endpoint()
        endpoint.source.failing.withLock { $0 = true }
        #expect(try endpoint.connect().http("GET", "/metrics").status == 500)
        #expect(endpoint.source.finished.withLock { $0 } == [true])
    }

    @Test func basicAuthGuardsEverythingButHealth() throws {
        let users = CredentialsFile(hashes: ["prometheus": PasswordHash.make(password: "s3cret", cost: 4)!])
        let endpoint = try Endpoint { $0.security.users = users }
        let client = try endpoint.connect()
        let denied = try client.http("GET", "/metrics")
        #expect(denied.status == 401 && denied.headers["www-authenticate"]?.hasPrefix("Basic") == true)
        let wrong = Data("prometheus:nope".utf8).base64EncodedString()
        #expect(try client.http("GET", "/metrics", headers: ["Authorization": "Basic \(wrong)"]).status == 401)
        let right = Data("prometheus:s3cret".utf8).base64EncodedString()
        #expect(try client.http("GET", "/metrics", headers: ["Authorization": "Basic \(right)"]).status == 200)
        // Again: answered from the remembered login, and still only for the right password.
        #expect(try client.http("GET", "/metrics", headers: ["Authorization": "Basic \(right)"]).status == 200)
        #expect(try client.http("GET", "/metrics", headers: ["Authorization": "Basic \(wrong)"]).status == 401)
        let stranger = Data("root:s3cret".utf8).base64EncodedString()
        #expect(try client.http("GET", "/metrics", headers: ["Authorization": "Basic \(stranger)"]).status == 401)
        #expect(try client.http("GET", "/healthz").status == 200)
        #expect(try client.http("GET", "/readyz").status == 200)
    }

    @Test func servesHTTPSWithAKeyAndCertificate() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let key = directory.appendingPathComponent("key.pem").path
        let certificate = directory.appendingPathComponent("cert.pem").path
        let made = try runProcess(
            "/usr/bin/openssl",
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", certificate, "-days", "1",
             "-subj", "/CN=127.0.0.1"])
        #expect(made.status == 0, "\(made.errors)")
        let endpoint = try Endpoint {
            $0.security.tls = TLSSettings(
                certificatePEM: try! String(contentsOfFile: certificate, encoding: .utf8),
                keyPEM: try! String(contentsOfFile: key, encoding: .utf8))
        }
        let https = try runProcess(
            "/usr/bin/curl", ["-s", "--cacert", certificate, "https://127.0.0.1:\(endpoint.port)/metrics"])
        #expect(https.status == 0 && https.output.hasSuffix("x_total 1\n"), "\(https.errors)")
        let plain = try runProcess("/usr/bin/curl", ["-s", "http://127.0.0.1:\(endpoint.port)/metrics"])
        #expect(plain.status != 0 || !plain.output.contains("x_total"))
    }

    @Test func aBadCertificateIsAClearStartError() {
        let server = MetricsHTTPServer(
            configuration: ExporterConfiguration(
                port: 0, security: EndpointSecurity(tls: TLSSettings(certificatePEM: "nope", keyPEM: "nope"))),
            source: FakeSource())
        #expect(throws: ExporterError.self) { try server.start() }
    }

    @Test func connectionsBeyondTheLimitWaitUntilOneCloses() throws {
        let endpoint = try Endpoint { $0.connectionLimit = 2 }
        let first = try endpoint.connect()
        let second = try endpoint.connect()
        #expect(try first.http("GET", "/healthz").status == 200)
        #expect(try second.http("GET", "/healthz").status == 200)
        let third = try endpoint.connect()
        try third.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        // Not served while two connections are open (the kernel holds it in the backlog)...
        #expect(throws: SocketError.self) { try third.readLine(timeoutMillis: 300) }
        first.close()
        // ...and served as soon as one goes.
        #expect(try third.readLine() == "HTTP/1.1 200 OK\r")
    }

    @Test func idleConnectionsTimeOut() throws {
        let endpoint = try Endpoint { $0.connectionTimeoutSeconds = 1 }
        let client = try endpoint.connect()
        #expect(try client.http("GET", "/healthz").status == 200)
        #expect(try client.readsEndOfStream(timeoutMillis: 5_000))
    }

    /// libmicrohttpd's own messages reach the log as lines of ours (escaped, in the chosen format), at
    /// debug level, never as raw lines on stderr.
    @Test func libmicrohttpdMessagesAreDebugLinesOfTheLog() throws {
        let log = CapturedLog()
        var logger = log.logger
        logger.logLevel = .debug
        let endpoint = try Endpoint(logger: logger)
        let client = try endpoint.connect()
        try client.send("GET /metrics HTTP/1.1\r\nHost: x")  // the headers never end
        client.close()
        // libmicrohttpd may notice that close only when the header timeout (10 s) shuts the connection down.
        try waitUntilTrue(seconds: 30) {
            log.lines("metrics endpoint: libmicrohttpd says").contains {
                $0.level == .debug && "\($0.metadata["detail"] ?? "")".contains("closed")
            }
        }
    }
}
