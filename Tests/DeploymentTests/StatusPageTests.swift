import Foundation
import MetricsExporter
import ReplicationCore
import ReplicationNIO
import ReplicationTestSupport
import SidecarMetrics
import Testing

/// The page at `/` as a person sees it: loaded in headless Chromium (Debian's `chromium`) from a running
/// hub with a worker that does not read, and from a relay behind it.
@Suite(.serialized) struct StatusPageTests {
    @Test func aBrowserShowsEveryConnectionItsLagAndTheRelaysUpstream() async throws {
        // The hostile connection pings once and never again: on a loaded machine this test can outlast the
        // 25 s ping timeout, which would close it before the page is rendered.
        let fixture = try await ServerFixture.start(
            ServerConfiguration(
                serverName: "test.local", writers: ["pub"],
                protocolLimits: ProtocolConfiguration(pingTimeoutMillis: 600_000), socketSendBuffer: 16_384))
        let source = HubMetricsSource(server: fixture.server)
        let exporter = MetricsHTTPServer(configuration: ExporterConfiguration(host: "127.0.0.1", port: 0), source: source)
        let port = try exporter.start()
        defer { exporter.stop() }

        let slow = try fixture.connect(name: "synapse.app.slow_worker", receiveBuffer: 4096)
        try slow.send("REPLICATE events NOW\n")
        #expect(try slow.readLine() == "POSITION events 0")
        let reader = try fixture.connect(name: "synapse.app.generic_worker")
        try reader.send("REPLICATE events NOW\nREPLICATE caches NOW\n")
        _ = try reader.readLines { $0 == "POSITION caches 0" }
        // A client's name is text on the page, never markup.
        let hostile = try fixture.connect(name: "<script>alert(1)</script>")
        try hostile.send("PING 1\n")
        let writer = try fixture.connect(name: "pub")
        // The slow worker's buffers fill past the write-buffer mark; the rows after that wait in the log for
        // it, so it shows a lag however the first rows were batched to it.
        let filling = 3_000
        let rows = filling + 100
        try writer.send((1...filling).map { "RDATA events \($0) \(eventRow($0))\n" }.joined())
        _ = try writer.readLines(filling)
        let highWater = ServerConfiguration().writeBufferHighWater
        try await waitUntil {
            (try? await fixture.snapshots().first { $0.name == "synapse.app.slow_worker" })?.bufferedWritableBytes ?? 0
                > highWater
        }
        try writer.send((filling + 1...rows).map { "RDATA events \($0) \(eventRow($0))\n" }.joined())
        _ = try writer.readLines(rows - filling)
        _ = try reader.readLines { $0.hasPrefix("RDATA events \(rows) ") }

        let relay = try await RelayFixture.start(upstreamPort: fixture.port, upstreamServerName: "test.local")
        let relayExporter = MetricsHTTPServer(
            configuration: ExporterConfiguration(host: "127.0.0.1", port: 0),
            source: HubMetricsSource(
                server: relay.server.server, upstream: { relay.link.currentStatus },
                upstreamAddress: "127.0.0.1:\(fixture.port)"))
        let relayPort = try relayExporter.start()
        defer { relayExporter.stop() }
        try await waitUntil { relay.server.log.currentToken(of: .events) == Int64(rows) }

        try await waitUntil { (try? source.scrape(openMetrics: false).body.contains("alert(1)")) == true }
        let hub = try Chromium.renderedText(of: "http://127.0.0.1:\(port)/")
        #expect(hub.contains("replication-sidecar 0."), "\(hub)")
        #expect(hub.contains("Connections (5)"), "\(hub)")  // slow, reader, hostile, writer, the relay
        #expect(hub.contains("<script>alert(1)</script> 127.0.0.1:"), "\(hub)")
        let slowRow = try #require(
            hub.firstMatch(
                of: #/synapse\.app\.slow_worker 127\.0\.0\.1:\d+ worker (?:\d+ min )?\d+ s events (\d+) \(lag (\d+)\) ([\d.]+ [KM]iB|\d+ B) ([\d.]+ [KM]iB) \d+ B \d+/#
            ), "no row for the slow worker in: \(hub)")
        // Its cursor and lag add up to the head; its buffers hold what it has not read (its pending PINGs
        // depend on how long the test took).
        #expect(Int(slowRow.output.1)! + Int(slowRow.output.2)! == rows)
        #expect(Int(slowRow.output.2)! > 0, "the slow worker shows no lag")
        #expect(hub.contains("synapse.app.generic_worker 127.0.0.1:"))
        #expect(hub.contains("events \(rows) (lag 0) caches 0 (lag 0)"), "\(hub)")
        #expect(hub.firstMatch(of: #/pub 127\.0\.0\.1:\d+ writer (?:\d+ min )?\d+ s none/#) != nil, "\(hub)")
        #expect(hub.contains("events \(rows) 3 \(rows)"), "stream row: head, subscribers, rows appended: \(hub)")
        #expect(hub.contains("Metrics · Health · Readiness"))
        let html = try Chromium.dom(of: "http://127.0.0.1:\(port)/")
        #expect(html.contains(#"<meta http-equiv="refresh" content="5">"#))
        #expect(html.contains(#"href="/metrics""#) && html.contains(#"href="/healthz""#) && html.contains(#"href="/readyz""#))
        #expect(!html.contains("<script"))

        let relayText = try Chromium.renderedText(of: "http://127.0.0.1:\(relayPort)/")
        #expect(relayText.contains("Upstream 127.0.0.1:\(fixture.port): connected"), "\(relayText)")
        #expect(relayText.contains("Received up to: events \(rows)"), "\(relayText)")

        // The picture in the README: RECORD_SCREENSHOT=1 writes it to docs/.
        let screenshot = try Chromium.screenshot(of: "http://127.0.0.1:\(port)/")
        #expect(screenshot.starts(with: [0x89, 0x50, 0x4E, 0x47]) && screenshot.count > 10_000)
        if ProcessInfo.processInfo.environment["RECORD_SCREENSHOT"] == "1" {
            try screenshot.write(to: repositoryRoot.appendingPathComponent("docs/status-page.png"))
        }
        try await relay.stop()
        try await fixture.stop()
    }
}

/// Debian's Chromium, headless, with a profile of its own per call.
enum Chromium {
    static func run(_ arguments: [String]) throws -> ProcessResult {
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: profile) }
        // --no-sandbox: CI runs the tests as root, where Chromium's sandbox refuses to start.
        return try runProcess(
            "/usr/bin/chromium",
            ["--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=\(profile.path)"] + arguments)
    }

    /// The document after Chromium has parsed and laid it out.
    static func dom(of url: String) throws -> String {
        let result = try run(["--dump-dom", url])
        guard result.status == 0 else { throw SocketError("chromium failed: \(result.errors)") }
        return result.output
    }

    /// The document's text, cells and lines separated by single spaces, entities decoded.
    static func renderedText(of url: String) throws -> String {
        try dom(of: url)
            .replacing(#/<style>.*?</style>/#.dotMatchesNewlines(), with: "")
            .replacing(#/</?(span|a)\b[^>]*>/#, with: "")  // inline: no space of their own
            .replacing(#/<[^>]+>/#, with: " ")
            .replacing(#/\s+/#, with: " ")
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&amp;", with: "&")
    }

    static func screenshot(of url: String) throws -> Data {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("status-\(UUID().uuidString).png")
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try run(["--screenshot=\(file.path)", "--window-size=1280,720", "--hide-scrollbars", url])
        guard result.status == 0 else { throw SocketError("chromium failed: \(result.errors)") }
        return try Data(contentsOf: file)
    }
}
