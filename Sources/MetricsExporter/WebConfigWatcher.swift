import Dispatch
import Synchronization

/// Re-reads a `--web.config.file` (and the certificate files it names) every `interval` and applies
/// what changed: a renewed certificate or a new user takes effect without a restart. A file that no
/// longer reads or parses leaves the settings in force and is reported once per distinct error.
public final class WebConfigWatcher: @unchecked Sendable {  // `timer` is touched by start() and stop() only
    private let path: String
    private let server: MetricsHTTPServer
    private let report: @Sendable (_ message: String, _ isError: Bool) -> Void
    private let lastError = Mutex<String?>(nil)
    private var timer: (any DispatchSourceTimer)?

    public init(
        path: String, server: MetricsHTTPServer, report: @escaping @Sendable (_ message: String, _ isError: Bool) -> Void
    ) {
        self.path = path
        self.server = server
        self.report = report
    }

    /// Reads the file now and applies it if it changed.
    public func checkNow() {
        do {
            try server.apply(try EndpointSecurity.load(webConfigFile: path))
            if lastError.withLock({ $0.take() }) != nil { report("web config file reads again: \(path)", false) }
        } catch {
            let message = "\(error)"
            guard lastError.withLock({ previous in
                defer { previous = message }
                return previous != message
            }) else { return }
            report("web config file not applied, the previous settings stay: \(message)", true)
        }
    }

    /// Checks every `interval` seconds until ``stop()`` (the watcher lives as long as that).
    public func start(interval: Double = 1) {
        let source = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "web-config-watcher"))
        source.schedule(deadline: .now() + interval, repeating: interval)
        // The timer holds the watcher until stop().
        source.setEventHandler { self.checkNow() }
        source.resume()
        timer = source
    }

    public func stop() {
        timer?.cancel()
        timer = nil
    }
}
