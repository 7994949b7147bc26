import Foundation
import Logging
import ServiceLifecycle

/// systemd's readiness protocol (`Type=notify`): datagrams such as `READY=1` to the socket named in
/// `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with `@`). Without the variable it does
/// nothing, so the same binary runs under any supervisor.
struct SystemdNotifier: Sendable {
    let socketPath: String?

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Sends one state line such as `READY=1`; failures are returned, not thrown: a missed notification
    /// must not stop the server (systemd then reports the start as timed out).
    @discardableResult
    func notify(_ state: String) -> String? {
        guard let socketPath else { return nil }
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return "socket: \(String(cString: strerror(errno)))" }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(socketPath.utf8)
        if path.first == UInt8(ascii: "@") { path[0] = 0 }  // abstract namespace
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else { return "NOTIFY_SOCKET path too long" }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
        let message = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                message.withUnsafeBytes { sendto(descriptor, $0.baseAddress, $0.count, 0, pointer, length) }
            }
        }
        return sent == message.count ? nil : "sendto \(socketPath): \(String(cString: strerror(errno)))"
    }
}

/// `READY=1` and `STOPPING=1` for systemd. A service of the group, listed last: it runs once the group
/// traps SIGTERM (a stop right after `READY=1` is then a graceful one) and after both listeners were
/// started, and it is the first to hear of a shutdown.
struct SystemdNotifications: Service {
    let notifier: SystemdNotifier
    let logger: Logger

    func run() async throws {
        send("READY=1")
        try? await gracefulShutdown()
        send("STOPPING=1")
    }

    private func send(_ state: String) {
        if let failure = notifier.notify(state) {
            logger.warning("systemd notification failed", metadata: ["state": "\(state)", "error": "\(failure)"])
        }
    }
}
