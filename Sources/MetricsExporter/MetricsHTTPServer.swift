import CMicroHTTPD
import Credentials
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What the endpoint asks of its owner for each scrape.
public protocol MetricsSource: Sendable {
    /// The exposition body and its content type; `openMetrics` says the client prefers OpenMetrics.
    func scrape(openMetrics: Bool) throws -> (body: String, contentType: String)
    /// Called after each scrape with how long it took and whether it failed.
    func scrapeFinished(seconds: Double, failed: Bool)
    /// Called for each HTTP connection closed for not sending its first request's headers in time.
    func slowClientClosed()
    /// Whether the server is up, for `/healthz` (liveness).
    var isHealthy: Bool { get }
    /// Whether the server can serve workers now, for `/readyz` (readiness): a relay also needs its upstream.
    var isReady: Bool { get }
    /// The HTML status page served at `/`, linking to the metrics at `telemetryPath`.
    func statusPage(telemetryPath: String) throws -> String
}

public struct ExporterError: Error, CustomStringConvertible {
    public var description: String
}

/// The HTTP endpoint on libmicrohttpd: the metrics at the telemetry path (text 0.0.4 or OpenMetrics,
/// optionally gzip), the probes `/healthz` and `/readyz`, and the source's status page at `/`.
/// libmicrohttpd runs its own thread; the source is called from it.
public final class MetricsHTTPServer: @unchecked Sendable {
    private let configuration: ExporterConfiguration
    private let source: any MetricsSource
    /// The running daemon; replaced when the TLS settings change, on the same listening socket.
    private let daemon = Mutex<RunningDaemon?>(nil)
    /// What requests are checked against: read by libmicrohttpd's threads, replaced by ``apply(_:)``.
    private let security: Mutex<EndpointSecurity>
    /// Logins that passed bcrypt, by user: a scrape every few seconds costs one bcrypt, not one each.
    private let verifiedLogins = Mutex<[String: (hash: String, password: [UInt8])]>([:])
    private let now: @Sendable () -> Double
    /// The last /metrics answer per variant, with the time its collection started.
    private let recentBodies = Mutex<[BodyVariant: (response: Response, collectedAt: Double)]>([:])
    private let headerDeadlines: RequestHeaderDeadlines
    /// Where libmicrohttpd's own messages go (a client that closed mid-request, a failed TLS handshake):
    /// at debug level, one per event, so that a flood of bad HTTP clients does not flood the log.
    private let logger: Logger
    private let messageSink: UnsafeMutablePointer<rs_mhd_message_sink>

    /// `now` is a monotonic clock in seconds; tests pass a manual one.
    public init(
        configuration: ExporterConfiguration, source: any MetricsSource,
        now: @escaping @Sendable () -> Double = monotonicSeconds, logger: Logger = Logger(label: "replication-sidecar")
    ) {
        self.configuration = configuration
        self.source = source
        self.logger = logger
        messageSink = .allocate(capacity: 1)
        self.security = Mutex(configuration.security)
        self.now = now
        self.headerDeadlines = RequestHeaderDeadlines(
            limitSeconds: configuration.headerTimeoutSeconds, connectionLimit: configuration.connectionLimit, now: now
        ) { source.slowClientClosed() }
        messageSink.initialize(
            to: rs_mhd_message_sink(handler: Self.logMessage, context: Unmanaged.passUnretained(self).toOpaque()))
    }

    deinit {
        stop()
        messageSink.deallocate()
    }

    /// Starts listening; returns the bound port (the real one when the configured port is 0).
    public func start() throws(ExporterError) -> Int {
        let running = try startDaemon(configuration.security, listenSocket: nil)
        daemon.withLock { $0 = running }
        headerDeadlines.startSweeping()
        return Self.boundPort(of: rs_mhd_listen_fd(running.pointer))
    }

    /// Serves with new TLS settings and users from now on. A change of TLS settings (a renewed
    /// certificate) starts a new daemon on the same listening socket: nothing is refused meanwhile, and
    /// connections already open finish on the old settings. Settings that fail to start leave the old
    /// ones in force.
    public func apply(_ new: EndpointSecurity) throws(ExporterError) {
        let old = security.withLock { $0 }
        guard new != old else { return }
        if new.tls != old.tls, let running = daemon.withLock({ $0 }) {
            let socket = MHD_quiesce_daemon(running.pointer)
            guard socket >= 0 else { throw ExporterError(description: "cannot hand the metrics socket over") }
            let replacement: RunningDaemon
            do {
                replacement = try startDaemon(new, listenSocket: socket)
            } catch {
                let restored = try? startDaemon(old, listenSocket: socket)
                daemon.withLock { $0 = restored }
                MHD_stop_daemon(running.pointer)
                throw error
            }
            daemon.withLock { $0 = replacement }
            MHD_stop_daemon(running.pointer)
        }
        security.withLock { $0 = new }
        verifiedLogins.withLock { $0 = [:] }
    }

    /// Stops listening and closes every HTTP connection.
    public func stop() {
        if let running = daemon.withLock({ $0.take() }) { MHD_stop_daemon(running.pointer) }
        headerDeadlines.stopSweeping()
    }

    /// A daemon and the PEM texts it was given, which must outlive it.
    private struct RunningDaemon: @unchecked Sendable {
        let pointer: OpaquePointer
        let keptAlive: [[CChar]]
    }

    /// Starts a daemon on the configured address, or on `listenSocket` (taken from the daemon it replaces).
    private func startDaemon(_ security: EndpointSecurity, listenSocket: Int32?) throws(ExporterError) -> RunningDaemon {
        // The inter-thread channel lets stop() wake libmicrohttpd's thread at once (without it the thread
        // notices only at its next timeout, which clients that keep sending push back forever), and lets a
        // daemon be quiesced, so that its socket can be handed to the next one.
        var flags = UInt32(MHD_USE_AUTO_INTERNAL_THREAD.rawValue | MHD_USE_ERROR_LOG.rawValue | MHD_USE_ITC.rawValue)
        var address = try ListenAddress.resolve(host: configuration.host, port: configuration.port)
        if address.isIPv6 { flags |= UInt32(MHD_USE_IPv6.rawValue) }
        var options: [MHD_OptionItem] = [
            listenSocket.map { MHD_OptionItem(option: .LISTEN_SOCKET, value: Int($0), ptr_value: nil) }
                // the address is set below, while it lives
                ?? MHD_OptionItem(option: .SOCK_ADDR, value: 0, ptr_value: nil),
            MHD_OptionItem(option: .CONNECTION_LIMIT, value: configuration.connectionLimit, ptr_value: nil),
            MHD_OptionItem(option: .PER_IP_CONNECTION_LIMIT, value: configuration.connectionsPerClient, ptr_value: nil),
            MHD_OptionItem(
                option: .CONNECTION_TIMEOUT, value: configuration.connectionTimeoutSeconds, ptr_value: nil),
        ]
        var keptAlive: [[CChar]] = []
        if let tls = security.tls {
            flags |= UInt32(MHD_USE_TLS.rawValue)
            var texts: [(MHD_OPTION, String)] = [
                (.HTTPS_MEM_KEY, tls.keyPEM), (.HTTPS_MEM_CERT, tls.certificatePEM),
                (.HTTPS_PRIORITIES, tls.minVersion.gnuTLSPriorities),
            ]
            if tls.clientAuth != .none, let ca = tls.clientCAPEM { texts.append((.HTTPS_MEM_TRUST, ca)) }
            keptAlive = texts.map { Array($0.1.utf8CString) }
            for index in texts.indices {
                let pointer = keptAlive[index].withUnsafeMutableBufferPointer { UnsafeMutableRawPointer($0.baseAddress!) }
                options.append(MHD_OptionItem(option: texts[index].0, value: 0, ptr_value: pointer))
            }
        }
        options.append(MHD_OptionItem(option: .END, value: 0, ptr_value: nil))
        let context = Unmanaged.passUnretained(self).toOpaque()
        let pointer = withUnsafeMutableBytes(of: &address.storage) { addressBytes in
            if listenSocket == nil { options[0].ptr_value = addressBytes.baseAddress }
            return options.withUnsafeMutableBufferPointer {
                rs_mhd_start(
                    flags, Self.handleRequest, Self.connectionChanged, Self.requestCompleted, context, messageSink,
                    $0.baseAddress)
            }
        }
        guard let pointer else {
            throw ExporterError(
                description: "cannot serve metrics on \(configuration.host):\(configuration.port)"
                    + (security.tls != nil ? " (is the TLS key/certificate valid PEM?)" : " (address in use?)"))
        }
        return RunningDaemon(pointer: pointer, keptAlive: keptAlive)
    }

    private static func boundPort(of descriptor: Int32) -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        let port =
            storage.ss_family == sa_family_t(AF_INET6)
            ? withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in6.self).sin6_port }
            : withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in.self).sin_port }
        return Int(UInt16(bigEndian: port))
    }

    // MARK: Requests (on libmicrohttpd's thread)

    private static let handleRequest: MHD_AccessHandlerCallback = {
        context, connection, url, method, _, _, uploadSize, state in
        guard let context, let connection, let url, let method, let uploadSize, let state else { return .NO }
        // Queueing a response on the first call makes libmicrohttpd close the connection after it:
        // mark the request and answer on the second call, which keeps HTTP keep-alive working.
        if state.pointee == nil {
            state.pointee = UnsafeMutableRawPointer(bitPattern: 1)
            Unmanaged<MetricsHTTPServer>.fromOpaque(context).takeUnretainedValue().headerDeadlines
                .headersReceived(connection)
            return .YES
        }
        if uploadSize.pointee > 0 {  // a body must be drained before answering
            uploadSize.pointee = 0
            return .YES
        }
        let server = Unmanaged<MetricsHTTPServer>.fromOpaque(context).takeUnretainedValue()
        let response = server.respond(
            connection: connection, path: String(cString: url), method: String(cString: method))
        return server.queue(response, on: connection)
    }

    private static let connectionChanged: MHD_NotifyConnectionCallback = { context, connection, _, change in
        guard let context, let connection else { return }
        let deadlines = Unmanaged<MetricsHTTPServer>.fromOpaque(context).takeUnretainedValue().headerDeadlines
        switch change {
        case .CONNECTION_NOTIFY_STARTED: deadlines.accepted(connection, socket: rs_mhd_connection_fd(connection))
        case .CONNECTION_NOTIFY_CLOSED: deadlines.closing(connection)
        }
    }

    private static let logMessage: rs_mhd_message_handler = { context, message in
        guard let context, let message else { return }
        var text = String(cString: message)
        while text.last?.isNewline == true { text.removeLast() }
        Unmanaged<MetricsHTTPServer>.fromOpaque(context).takeUnretainedValue().logger.debug(
            "metrics endpoint: libmicrohttpd says", metadata: ["detail": "\(text)"])
    }

    private static let requestCompleted: MHD_RequestCompletedCallback = { context, connection, _, _ in
        guard let context, let connection else { return }
        Unmanaged<MetricsHTTPServer>.fromOpaque(context).takeUnretainedValue().headerDeadlines.responded(connection)
    }

    struct Response: Sendable {
        var status: UInt32
        var body: [UInt8]
        var headers: [(String, String)]
        var challenge = false
    }

    private func respond(connection: OpaquePointer, path: String, method: String) -> Response {
        guard method == "GET" || method == "HEAD" else {
            return Response(status: 405, body: Array("method not allowed\n".utf8), headers: [("Allow", "GET, HEAD")])
        }
        let security = self.security.withLock { $0 }
        if let tls = security.tls, !tls.clientAuth.accepts(clientCertificate(connection)) {
            return Response(
                status: 403, body: Array("a valid client certificate is required\n".utf8),
                headers: [("Content-Type", "text/plain")])
        }
        if path == "/healthz" { return probe(source.isHealthy) }
        if path == "/readyz" { return probe(source.isReady) }
        if let users = security.users, !authorized(connection, users) {
            return Response(
                status: 401, body: Array("authentication required\n".utf8), headers: [], challenge: true)
        }
        switch path {
        case configuration.telemetryPath:
            return metrics(connection)
        case "/":
            return statusPage()
        default:
            return Response(status: 404, body: Array("not found\n".utf8), headers: [("Content-Type", "text/plain")])
        }
    }

    /// Probes for Kubernetes and load balancers: never behind basic auth.
    private func probe(_ passing: Bool) -> Response {
        passing
            ? Response(status: 200, body: Array("ok\n".utf8), headers: [("Content-Type", "text/plain")])
            : Response(status: 503, body: Array("not ready\n".utf8), headers: [("Content-Type", "text/plain")])
    }

    private func statusPage() -> Response {
        do {
            return Response(
                status: 200, body: Array(try source.statusPage(telemetryPath: configuration.telemetryPath).utf8),
                headers: [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")])
        } catch {
            return Response(status: 500, body: Array("status unavailable: \(error)\n".utf8), headers: [])
        }
    }

    struct BodyVariant: Hashable {
        var openMetrics: Bool
        var gzip: Bool
    }

    private func metrics(_ connection: OpaquePointer) -> Response {
        let variant = BodyVariant(
            openMetrics: ContentNegotiation.prefersOpenMetrics(accept: header(connection, "Accept")),
            gzip: ContentNegotiation.acceptsGzip(acceptEncoding: header(connection, "Accept-Encoding")))
        let started = now()
        // Scrapes close together (an HA pair of Prometheus servers, a dashboard, a burst) share one
        // collection: each costs a hop to every event loop and two ioctls per connection.
        if let recent = recentBodies.withLock({ $0[variant] }),
            started - recent.collectedAt < configuration.maxBodyAgeSeconds
        {
            return recent.response
        }
        do {
            let (body, contentType) = try source.scrape(openMetrics: variant.openMetrics)
            var response = Response(status: 200, body: Array(body.utf8), headers: [("Content-Type", contentType)])
            if variant.gzip, let zipped = Gzip.compress(response.body) {
                response.body = zipped
                response.headers.append(("Content-Encoding", "gzip"))
            }
            source.scrapeFinished(seconds: now() - started, failed: false)
            recentBodies.withLock { $0[variant] = (response, started) }
            return response
        } catch {
            source.scrapeFinished(seconds: now() - started, failed: true)
            return Response(status: 500, body: Array("scrape failed: \(error)\n".utf8), headers: [])
        }
    }

    /// Basic auth against bcrypt hashes. A wrong password always costs a bcrypt computation (tens of
    /// milliseconds on this thread), so guessing is slow; so does an unknown user, so that names cannot
    /// be told apart by timing.
    private func authorized(_ connection: OpaquePointer, _ users: CredentialsFile) -> Bool {
        var password: UnsafeMutablePointer<CChar>?
        guard let user = MHD_basic_auth_get_username_password(connection, &password) else { return false }
        defer {
            MHD_free(user)
            if let password { MHD_free(password) }
        }
        let name = String(cString: user)
        let given = password.map { Array(String(cString: $0).utf8) } ?? []
        guard let hash = users.hashes[name] else {
            _ = users.hashes.values.first?.matches(String(decoding: given, as: UTF8.self))
            return false
        }
        if let remembered = verifiedLogins.withLock({ $0[name] }), remembered.hash == hash.text,
            constantTimeEquals(remembered.password, given)
        {
            return true
        }
        guard hash.matches(String(decoding: given, as: UTF8.self)) else { return false }
        verifiedLogins.withLock { $0[name] = (hash.text, given) }
        return true
    }

    private func clientCertificate(_ connection: OpaquePointer) -> ClientCertificate {
        switch rs_mhd_client_certificate(connection) {
        case 1: .verified
        case 0: .absent
        default: .invalid
        }
    }

    private func header(_ connection: OpaquePointer, _ name: String) -> String? {
        MHD_lookup_connection_value(connection, .HEADER_KIND, name).map { String(cString: $0) }
    }

    private func queue(_ response: Response, on connection: OpaquePointer) -> MHD_Result {
        let body = response.body
        let handle = body.withUnsafeBytes { rs_mhd_response_copying($0.count, $0.baseAddress) }
        guard let handle else { return .NO }
        defer { MHD_destroy_response(handle) }
        for (name, value) in response.headers { MHD_add_response_header(handle, name, value) }
        if response.challenge {
            return MHD_queue_basic_auth_fail_response(connection, "replication-sidecar", handle)
        }
        return MHD_queue_response(connection, response.status, handle)
    }
}

@Sendable public func monotonicSeconds() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
}
