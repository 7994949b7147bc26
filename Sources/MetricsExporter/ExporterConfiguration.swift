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
    /// Seconds an idle HTTP connection is kept.
    public var connectionTimeoutSeconds: Int
    /// Seconds a collected /metrics body is served again to later scrapes of the same format and
    /// encoding; 0 collects on every scrape.
    public var maxBodyAgeSeconds: Double
    /// PEM key and certificate to serve HTTPS instead of HTTP.
    public var tls: TLSFiles?
    /// Credentials required by HTTP basic authentication on every path but the probes `/healthz` and `/readyz`.
    public var basicAuth: BasicAuth?

    public struct TLSFiles: Sendable {
        public var keyPEM: String
        public var certificatePEM: String
        public init(keyPEM: String, certificatePEM: String) {
            self.keyPEM = keyPEM
            self.certificatePEM = certificatePEM
        }
    }

    public struct BasicAuth: Sendable {
        public var username: String
        public var password: String
        public init(username: String, password: String) {
            self.username = username
            self.password = password
        }
    }

    public static let defaultPort = 9469

    public init(
        host: String = "127.0.0.1", port: Int = ExporterConfiguration.defaultPort, telemetryPath: String = "/metrics",
        connectionLimit: Int = 64, connectionsPerClient: Int = 8,
        connectionTimeoutSeconds: Int = 30, maxBodyAgeSeconds: Double = 0.25, tls: TLSFiles? = nil, basicAuth: BasicAuth? = nil
    ) {
        self.host = host
        self.port = port
        self.telemetryPath = telemetryPath
        self.connectionLimit = connectionLimit
        self.connectionsPerClient = connectionsPerClient
        self.connectionTimeoutSeconds = connectionTimeoutSeconds
        self.maxBodyAgeSeconds = maxBodyAgeSeconds
        self.tls = tls
        self.basicAuth = basicAuth
    }
}
