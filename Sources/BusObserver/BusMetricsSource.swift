import Logging
import MetricsExporter
import ReplicationCore
import ReplicationMetrics
import ServiceLifecycle

/// Feeds the HTTP endpoint from the observer: one snapshot per scrape, taken on its event loop.
public final class BusMetricsSource: MetricsSource {
    private let observer: SynapseBusObserver

    public init(observer: SynapseBusObserver) { self.observer = observer }

    public func scrape(openMetrics: Bool) throws -> (body: String, contentType: String) {
        let observer = self.observer
        // Called on libmicrohttpd's thread, never on an event loop, so waiting here is safe.
        let snapshot = try observer.eventLoop.submit { observer.snapshot() }.wait()
        let format: ExpositionFormat = openMetrics ? .openMetrics : .text
        return (Exposition.render(Exposition.families(snapshot), as: format), format.contentType)
    }

    public func scrapeFinished(seconds: Double, failed: Bool) {}
    public func slowClientClosed() {}

    /// Up while the process serves; a Redis outage shows in `replication_sidecar_redis_connected` instead,
    /// so that a liveness probe does not restart the observer for someone else's outage.
    public var isHealthy: Bool { true }

    /// Ready while subscribed: only then does it see the bus.
    public var isReady: Bool {
        let observer = self.observer
        return (try? observer.eventLoop.submit { observer.snapshot().redis.first?.connected ?? false }.wait()) ?? false
    }

    public func statusPage(telemetryPath: String) throws -> String {
        let observer = self.observer
        let snapshot = try observer.eventLoop.submit { observer.snapshot() }.wait()
        let observation = snapshot.observation
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
            <title>replication-sidecar observe</title></head><body>
            <h1>Synapse replication bus</h1>
            <p>Redis: \(snapshot.redis.map { "\($0.role) \($0.connected ? "connected" : "reconnecting")" }.joined(separator: ", ")) · \
            <a href="\(HTMLText.escape(telemetryPath))">Metrics</a></p>
            <table><tr><th>stream</th><th>instance</th><th>position</th><th>rows</th><th>gaps</th></tr>

            """
        for writer in observation.writers.keys.sorted() {
            let state = observation.writers[writer]!
            html += "<tr><td>\(HTMLText.escape(writer.stream))</td><td>\(HTMLText.escape(writer.instance))</td>"
            html +=
                "<td>\(state.position.map(String.init) ?? "")</td><td>\(state.rows)</td><td>\(state.gaps)</td></tr>\n"
        }
        return html + "</table></body></html>\n"
    }
}

/// The observer as a service: started when the group runs, stopped on SIGTERM/SIGINT.
public final class BusObserverService: Service {
    private let observer: SynapseBusObserver

    public init(observer: SynapseBusObserver) { self.observer = observer }

    public func run() async throws {
        let observer = self.observer
        try await observer.eventLoop.submit { observer.start() }.get()
        await withGracefulShutdownHandler {
            try? await gracefulShutdown()
        } onGracefulShutdown: {
        }
        try await observer.eventLoop.submit { observer.stop() }.get()
    }
}
