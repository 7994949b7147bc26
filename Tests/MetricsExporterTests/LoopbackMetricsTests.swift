import Foundation
import NIOPosix
import ReplicationCore
import ReplicationNIO
import ReplicationTestSupport
import SidecarMetrics
import Testing

/// A scrape of a real server, read back by series.
struct Scrape {
    let text: String

    init(_ source: HubMetricsSource) throws {
        text = try source.scrape(openMetrics: false).body
    }

    /// The value of `metric` with exactly these labels (in exposition order), if the series exists.
    func value(_ metric: String, _ labels: String) -> Double? {
        let prefix = "\(metric){\(labels)} "
        return text.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { Double($0.dropFirst(prefix.count)) }
    }
}

@Suite(.serialized) struct LoopbackMetricsTests {
    func waitFor(_ source: HubMetricsSource, _ condition: (Scrape) -> Bool) throws {
        try waitUntilTrue { (try? Scrape(source)).map(condition) ?? false }
    }

    @Test func aStalledSubscriberShowsItsBuffersAndLagThenDrains() async throws {
        // A bounded kernel send buffer, so the stall reaches user space within a few hundred KiB.
        let fixture = try await ServerFixture.start(
            ServerConfiguration(serverName: "test.local", writers: ["pub"], socketSendBuffer: 16_384))
        let source = HubMetricsSource(server: fixture.server)
        let slow = try fixture.connect(name: "slow", receiveBuffer: 4096)
        try slow.send("REPLICATE events NOW\n")
        #expect(try slow.readLine() == "POSITION events 0")
        let writer = try fixture.connect(name: "pub")
        let rows = 5_000
        try writer.send((1...rows).map { "RDATA events \($0) \(eventRow($0))\n" }.joined())
        _ = try writer.readLines(rows)

        let stalled = try Scrape(source)
        let name = #"name="slow""#
        #expect((stalled.value("synapse_replication_tcp_protocol_transport_kernel_send_buffer", name) ?? 0) > 0)
        #expect((stalled.value("synapse_replication_tcp_protocol_transport_send_buffer", name) ?? 0) > 0)
        #expect((stalled.value("replication_sidecar_connection_lag_tokens", #"name="slow",stream_name="events""#) ?? 0) > 0)
        #expect(stalled.value("replication_sidecar_stream_head_token", #"stream_name="events""#) == Double(rows))

        _ = try slow.readLines(rows)
        try waitFor(source) {
            $0.value("synapse_replication_tcp_protocol_transport_kernel_send_buffer", name) == 0
                && $0.value("synapse_replication_tcp_protocol_transport_send_buffer", name) == 0
                && $0.value("replication_sidecar_connection_lag_tokens", #"name="slow",stream_name="events""#) == 0
        }
        #expect(try Scrape(source).value("synapse_replication_tcp_protocol_outbound_commands", #"command="RDATA",name="slow""#) == Double(rows))

        // A closed connection's series disappear, but for the counters of its name, which keep counting.
        slow.close()
        try waitFor(source) { $0.value("synapse_replication_tcp_protocol_pending_commands", name) == nil }
        let closed = try Scrape(source)
        #expect(!closed.text.contains("synapse_replication_tcp_protocol_outbound_commands{command=\"RDATA\",\(name)}"))
        #expect(closed.value("replication_sidecar_outbound_commands_total", #"command="RDATA",name="slow""#) == Double(rows))
        #expect(closed.value("replication_sidecar_inbound_commands_total", #"command="REPLICATE",name="slow""#) == 1)
        // A second connection of that name adds to the same counter: no reset for rate() to see.
        let again = try fixture.connect(name: "slow")
        try again.send("REPLICATE events NOW\n")
        _ = try again.readLines { $0.hasPrefix("POSITION events ") }
        try waitFor(source) {
            $0.value("replication_sidecar_inbound_commands_total", #"command="REPLICATE",name="slow""#) == 2
                && $0.value("synapse_replication_tcp_protocol_inbound_commands", #"command="REPLICATE",name="slow""#) == 1
        }
        try await fixture.stop()
    }

    @Test func aRelayCountsWhatItReceivesAndIsReadyOnlyWhileConnectedUpstream() async throws {
        let hub = try await ServerFixture.start(ServerConfiguration(serverName: "test.local", writers: ["pub"]))
        let relay = try await RelayFixture.start(upstreamPort: hub.port, upstreamServerName: "test.local")
        let source = HubMetricsSource(server: relay.server.server, upstream: { relay.link.currentStatus })
        try await waitUntil { source.isReady }
        let writer = try hub.connect(name: "pub")
        try writer.send("RDATA events batch \(eventRow(1))\nRDATA events 1 \(eventRow(2))\nRDATA events 2 \(eventRow(3))\n")
        #expect(try writer.readLines(2) == ["POSITION events 1", "POSITION events 2"])
        let events = #"stream_name="events""#
        try waitFor(source) { $0.value("synapse_replication_tcp_protocol_inbound_rdata_count_total", events) == 3 }
        #expect(try Scrape(source).value("synapse_replication_tcp_protocol_inbound_rdata_count_total", #"stream_name="caches""#) == 0)

        // Upstream gone: still alive and serving its log, but not ready.
        try await hub.stop()
        try await waitUntil { !source.isReady }
        #expect(source.isHealthy)
        try await relay.stop()
    }

    @Test func commandsQueuedForAPausedConnectionShowAsPending() async throws {
        let fixture = try await ServerFixture.start(
            ServerConfiguration(serverName: "test.local", socketSendBuffer: 8192))
        let source = HubMetricsSource(server: fixture.server)
        let flooder = try fixture.connect(name: "flooder", receiveBuffer: 2048)
        let requests = 8_000  // enough to pause the connection, far from the 10,000 queued that end it
        try flooder.send(String(repeating: "REPLICATE caches NOW\n", count: requests))
        try waitFor(source) {
            ($0.value("synapse_replication_tcp_protocol_pending_commands", #"name="flooder""#) ?? 0) > 0
                && $0.value("synapse_replication_tcp_protocol_inbound_commands", #"command="REPLICATE",name="flooder""#)
                    == Double(requests)
        }
        // Reading everything drains the queue.
        #expect(try flooder.readLines(requests).allSatisfy { $0 == "POSITION caches 0" })
        try waitFor(source) { $0.value("synapse_replication_tcp_protocol_pending_commands", #"name="flooder""#) == 0 }
        try await fixture.stop()
    }
}
