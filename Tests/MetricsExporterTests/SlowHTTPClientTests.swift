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
