import Foundation
import MetricsExporter
import ReplicationTestSupport
import Synchronization
import Testing

/// Clients that connect and then send a byte now and then (slowloris) must neither starve the scrapers
/// nor hold up a shutdown.
@Suite struct SlowHTTPClientTests {
    /// `count` connections from `addresses` loopback addresses, each with the first byte of a request sent.
    func slowClients(port: Int, count: Int, addresses: Int) -> [LineSocket] {
        (0..<count).compactMap { index in
            // Connections beyond a client's limit are refused; what is refused is not held.
            guard let client = try? LineSocket(port: port, source: "127.0.0.\(2 + index % addresses)") else { return nil }
            _ = client.sendWithoutBlocking(Array("G".utf8))
            return client
        }
    }

    @Test func oneClientAddressCannotTakeEverySlot() throws {
        let endpoint = try Endpoint {
            $0.connectionLimit = 16
            $0.connectionsPerClient = 4
        }
        let slow = slowClients(port: endpoint.port, count: 40, addresses: 1)
        let scraper = try endpoint.connect()
        #expect(try scraper.http("GET", "/healthz").status == 200)
        withExtendedLifetime(slow) {}
    }

    /// Sends one more byte to each client that is still open, round after round, until the endpoint has
    /// closed every one or `seconds` have passed; returns when each was found closed (monotonic seconds).
    func dribbleUntilClosed(_ clients: [LineSocket], seconds: Double) -> [Double?] {
        var closedAt = [Double?](repeating: nil, count: clients.count)
        let deadline = monotonicSeconds() + seconds
        while closedAt.contains(where: { $0 == nil }), monotonicSeconds() < deadline {
            for (index, client) in clients.enumerated() where closedAt[index] == nil {
                _ = client.sendWithoutBlocking(Array("E".utf8))
                // Also the pace of the dribble: a few bytes a second per client.
                if (try? client.readsEndOfStream(timeoutMillis: 20)) == true { closedAt[index] = monotonicSeconds() }
            }
        }
        return closedAt
    }

    @Test func clientsDribblingTheirHeadersAreClosedAfterTheHeaderTimeout() throws {
        let endpoint = try Endpoint {
            $0.connectionLimit = 16
            $0.connectionsPerClient = 4
            $0.headerTimeoutSeconds = 2
        }
        let connected = monotonicSeconds()
        let slow = slowClients(port: endpoint.port, count: 8, addresses: 4)
        #expect(slow.count == 8)
        // Slots are left: a scraper is served while they dribble.
        let scraper = try endpoint.connect()
        #expect(try scraper.http("GET", "/metrics").status == 200)

        // libmicrohttpd's idle timeout (30 s here) restarts on every byte; the header timeout does not.
        let closedAt = dribbleUntilClosed(slow, seconds: 60)
        for closed in closedAt {
            guard let closed else {
                Issue.record("a client dribbling its headers was still open after 60 s")
                continue
            }
            #expect(closed - connected >= 2, "closed \(closed - connected) s after connecting, before the timeout")
        }
        // The scraper's kept-alive connection, idle as long, is closed too but not counted: it was served.
        try waitUntilTrue(seconds: 30) { endpoint.source.slowClientsClosed.load(ordering: .relaxed) == 8 }
        #expect(try scraper.readsEndOfStream(timeoutMillis: 30_000))
        #expect(endpoint.source.slowClientsClosed.load(ordering: .relaxed) == 8)
    }

    @Test func whenSlowClientsTakeEverySlotAScraperIsServedWithinAboutASecond() throws {
        // The header timeout alone would keep the scraper out for 12 s, past its 10 s read timeout.
        let endpoint = try Endpoint {
            $0.connectionLimit = 8
            $0.connectionsPerClient = 2
            $0.headerTimeoutSeconds = 12
        }
        let slow = slowClients(port: endpoint.port, count: 8, addresses: 4)
        #expect(slow.count == 8)
        // The scraper waits in the listen backlog until the endpoint, full, closes a client that has waited
        // a second for its headers; the scraper's request is there as soon as it is accepted.
        let scraper = try endpoint.connect()
        #expect(try scraper.http("GET", "/metrics").status == 200)
        #expect(endpoint.source.slowClientsClosed.load(ordering: .relaxed) >= 1)
        // Those not closed to make room go at the header timeout.
        for client in slow { #expect(try client.readsEndOfStream(timeoutMillis: 30_000)) }
        try waitUntilTrue(seconds: 30) { endpoint.source.slowClientsClosed.load(ordering: .relaxed) == 8 }
    }

    @Test func sigtermExitsPromptlyWithSlowHTTPClientsOpen() throws {
        let sidecar = try SidecarProcess(serve: ["--in-memory"])
        try sidecar.waitUntilHandlingSIGTERM()
        let slow = slowClients(port: sidecar.metricsPort, count: 100, addresses: 50)
        let exited = Atomic<Int32>(-1)
        Thread.detachNewThread { exited.store(sidecar.terminate(), ordering: .releasing) }
        // The README promises ERROR to workers, up to 5 s for them to go, then exit 0. libmicrohttpd's thread
        // used to sleep through the stop while clients kept their connections busy.
        try waitUntilTrue(seconds: 8) { exited.load(ordering: .acquiring) != -1 }
        #expect(exited.load(ordering: .acquiring) == 0)
        withExtendedLifetime(slow) {}
    }
}
