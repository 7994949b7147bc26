import ArgumentParser
import Credentials
import Foundation
import Logging
import MetricsExporter
import SidecarLogging

/// The metrics endpoint's flags, the same for `serve` and `observe`.
struct MetricsOptions: ParsableArguments {
    @Option(
        name: .customLong("web.listen-address"),
        help: "[HOST]:PORT of the metrics endpoint (default 127.0.0.1:9469); a host name resolves, an empty host is every IPv4 interface, port 0 picks a free port and logs it.")
    var webListenAddress: String?

    @Option(name: .customLong("web.telemetry-path"), help: "Path of the metrics on the endpoint.")
    var webTelemetryPath = "/metrics"

    @Option(help: "Host of the metrics endpoint (the host part of --web.listen-address).")
    var metricsHost: String?

    @Option(help: "Port of the metrics endpoint (the port part of --web.listen-address).")
    var metricsPort: Int?

    @Option(help: "HTTP connections the metrics endpoint serves at once.")
    var metricsConnectionLimit = 64

    @Option(help: "HTTP connections one client address may hold at once (the rest stay free for other scrapers).")
    var metricsConnectionsPerClient = 8

    @Option(help: "Seconds a metrics HTTP connection may stay silent while a request or response is under way.")
    var metricsTimeout = 30

    @Option(
        help: """
            Seconds a metrics HTTP connection may take to send complete request headers, from its accept or its \
            previous response; slower ones are closed (a client sending a byte now and then would otherwise hold \
            its slot for ever).
            """)
    var metricsHeaderTimeout = 10

    @Option(help: "Seconds a collected /metrics body is reused by later scrapes; 0 collects on every scrape.")
    var metricsMaxAge = 0.25

    @Option(help: "PEM private key: serve metrics over HTTPS (needs --metrics-tls-cert).")
    var metricsTLSKey: String?

    @Option(help: "PEM certificate for --metrics-tls-key.")
    var metricsTLSCert: String?

    @Option(
        help: """
            File of user:HASH lines (bcrypt, as 'htpasswd -nB USER' prints): require HTTP basic auth on the \
            metrics endpoint (not /healthz, /readyz).
            """)
    var metricsBasicAuthFile: String?

    @Option(
        name: .customLong("web.config.file"),
        help: """
            Prometheus exporter-toolkit web configuration (YAML): tls_server_config and basic_auth_users \
            with bcrypt hashes; re-read every second (certificates renewed without a restart).
            """)
    var webConfigFile: String?

    func validate() throws {
        _ = try metricsListenAddress()
        guard webTelemetryPath.hasPrefix("/"), !["/", "/healthz", "/readyz"].contains(webTelemetryPath),
            !webTelemetryPath.contains(where: { $0 == "?" || $0 == "#" || $0.isWhitespace })
        else {
            throw ValidationError("--web.telemetry-path must be a path such as /metrics, other than /, /healthz and /readyz")
        }
        guard metricsConnectionLimit > 0, metricsTimeout > 0, metricsHeaderTimeout > 0 else {
            throw ValidationError(
                "--metrics-connection-limit, --metrics-timeout and --metrics-header-timeout must be positive")
        }
        guard (1...metricsConnectionLimit).contains(metricsConnectionsPerClient) else {
            throw ValidationError(
                "--metrics-connections-per-client must be between 1 and --metrics-connection-limit (\(metricsConnectionLimit))")
        }
        guard metricsMaxAge >= 0, metricsMaxAge <= 60 else {
            throw ValidationError("--metrics-max-age must be between 0 and 60 seconds, got \(metricsMaxAge)")
        }
        if webConfigFile != nil, metricsTLSKey != nil || metricsTLSCert != nil || metricsBasicAuthFile != nil {
            throw ValidationError(
                "--web.config.file replaces --metrics-tls-key, --metrics-tls-cert and --metrics-basic-auth-file: "
                    + "give one or the others")
        }
        guard (metricsTLSKey == nil) == (metricsTLSCert == nil) else {
            throw ValidationError("--metrics-tls-key and --metrics-tls-cert go together: give both or neither")
        }
    }

    /// The endpoint's host and port, from --web.listen-address or the older --metrics-host/--metrics-port.
    func metricsListenAddress() throws -> (host: String, port: Int) {
        guard let webListenAddress else {
            let port = metricsPort ?? ExporterConfiguration.defaultPort
            guard (0...65535).contains(port) else {
                throw ValidationError("--metrics-port must be between 0 and 65535, got \(port)")
            }
            return (metricsHost ?? "127.0.0.1", port)
        }
        guard metricsHost == nil, metricsPort == nil else {
            throw ValidationError("--web.listen-address replaces --metrics-host and --metrics-port: give one or the other")
        }
        guard let parsed = parseListenAddress(webListenAddress) else {
            throw ValidationError(
                "--web.listen-address must be [HOST]:PORT (e.g. 0.0.0.0:9469, [::1]:9469, :9469), got '\(webListenAddress)'")
        }
        return parsed
    }

    /// Starts the endpoint and logs where it listens; exits 1 with the reason when it cannot.
    func startExporter(
        configuration: ExporterConfiguration, source: any MetricsSource, logger: Logger
    ) throws -> MetricsHTTPServer {
        let exporter = MetricsHTTPServer(configuration: configuration, source: source, logger: logger)
        do {
            let port = try exporter.start()
            logger.info(
                "metrics endpoint ready",
                metadata: [
                    "address": "\(configuration.host)", "port": "\(port)", "path": "\(configuration.telemetryPath)",
                ])
        } catch {
            logger.critical("\(error)")
            throw ExitCode.failure
        }
        // Certificates renewed and users changed in the web config file apply without a restart; the
        // watcher runs as long as the process.
        if let webConfigFile {
            WebConfigWatcher(path: webConfigFile, server: exporter) { message, isError in
                if isError { logger.error("\(message)") } else { logger.notice("\(message)") }
            }.start()
        }
        return exporter
    }

    func exporterConfiguration() throws -> ExporterConfiguration {
        let (host, port) = try metricsListenAddress()
        var configuration = ExporterConfiguration(
            host: host, port: port, telemetryPath: webTelemetryPath, connectionLimit: metricsConnectionLimit,
            connectionsPerClient: metricsConnectionsPerClient, connectionTimeoutSeconds: metricsTimeout,
            headerTimeoutSeconds: Double(metricsHeaderTimeout), maxBodyAgeSeconds: metricsMaxAge)
        if let webConfigFile {
            do {
                configuration.security = try EndpointSecurity.load(webConfigFile: webConfigFile)
            } catch {
                throw ValidationError("--web.config.file: \(error)")
            }
        }
        if let metricsTLSKey, let metricsTLSCert {
            configuration.security.tls = TLSSettings(
                certificatePEM: try readFile(metricsTLSCert, flag: "--metrics-tls-cert"),
                keyPEM: try readFile(metricsTLSKey, flag: "--metrics-tls-key"))
        }
        if let metricsBasicAuthFile {
            do {
                configuration.security.users = try CredentialsFile(contentsOf: metricsBasicAuthFile)
            } catch {
                throw ValidationError("--metrics-basic-auth-file: \(error)")
            }
        }
        return configuration
    }

    private func readFile(_ path: String, flag: String) throws -> String {
        guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("\(flag): cannot read '\(path)'") }
        return contents
    }
}

/// `--log-level` and `--log-format`, the same for `serve` and `observe`.
struct LogOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning (or warn), error or critical.")
    var logLevel = "info"

    @Option(help: "Log line format: logfmt or json.")
    var logFormat = "logfmt"

    func validate() throws {
        guard parseLogLevel(logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning (or warn), error, critical")
        }
        guard LogFormat(rawValue: logFormat) != nil else {
            throw ValidationError("--log-format must be logfmt or json, got '\(logFormat)'")
        }
    }

    /// Logs to stderr as asked, once per process.
    func bootstrap() -> Logger {
        let level = parseLogLevel(logLevel)!
        let format = LogFormat(rawValue: logFormat)!
        LoggingSystem.bootstrap { LineLogHandler(label: $0, format: format, level: level) }
        return Logger(label: "replication-sidecar")
    }
}

/// `HOST:PORT`, `[IPV6]:PORT` or `:PORT` (every IPv4 interface, 0.0.0.0).
func parseListenAddress(_ text: String) -> (host: String, port: Int)? {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port)
    else { return nil }
    var host = text[..<colon]
    if host.hasPrefix("[") {
        guard host.hasSuffix("]"), host.count > 2 else { return nil }
        host = host.dropFirst().dropLast()
    } else if host.contains(":") {
        return nil  // an IPv6 address needs brackets
    }
    return (host.isEmpty ? "0.0.0.0" : String(host), port)
}
