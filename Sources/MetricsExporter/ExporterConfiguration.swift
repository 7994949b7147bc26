/// How the metrics endpoint listens and whom it serves. Defaults written out once.
public struct ExporterConfiguration: Sendable {
    /// Listen address: an IPv4 or IPv6 literal or a host name; loopback unless told otherwise.
    public var host: String
    /// Listen port; `0` picks a free one. The default keeps clear of Prometheus (9090), Alertmanager (9093)
    /// and node_exporter (9100).
    public var port: Int
    /// Where `/metrics` is served (`--web.telemetry-path`).
    public var telemetryPath: String
    /// Concurrent HTTP connections served; more are refused.
    public var connectionLimit: Int
    /// Concurrent HTTP connections one client address may hold, so that one client (slow or hostile)
    /// cannot take every slot from the scrapers.
    public var connectionsPerClient: Int
    /// Seconds an HTTP connection may stay silent while a request or response is under way.
    public var connectionTimeoutSeconds: Int
    /// Seconds a connection may take to send complete request headers, from its accept or its previous
    /// response: libmicrohttpd's timeout restarts on every byte, so this is what bounds a client sending
    /// one byte at a time.
    public var headerTimeoutSeconds: Double
    /// Seconds a collected /metrics body is served again to later scrapes of the same format and
    /// encoding; 0 collects on every scrape.
    public var maxBodyAgeSeconds: Double
    /// HTTPS and basic-auth users (replaced while running by ``MetricsHTTPServer/apply(_:)``).
    public var security: EndpointSecurity

    public static let defaultPort = 9469

    public init(
        host: String = "127.0.0.1", port: Int = ExporterConfiguration.defaultPort, telemetryPath: String = "/metrics",
        connectionLimit: Int = 64, connectionsPerClient: Int = 8,
        connectionTimeoutSeconds: Int = 30, headerTimeoutSeconds: Double = 10, maxBodyAgeSeconds: Double = 0.25,
        security: EndpointSecurity = EndpointSecurity()
    ) {
        self.host = host
        self.port = port
        self.telemetryPath = telemetryPath
        self.connectionLimit = connectionLimit
        self.connectionsPerClient = connectionsPerClient
        self.connectionTimeoutSeconds = connectionTimeoutSeconds
        self.headerTimeoutSeconds = headerTimeoutSeconds
        self.maxBodyAgeSeconds = maxBodyAgeSeconds
        self.security = security
    }
}
