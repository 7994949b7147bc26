import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// How long an HTTP connection may take to send complete request headers. libmicrohttpd's own timeout
/// restarts on every byte, so a client sending one byte a second (slowloris) would hold its slot for ever;
/// this bounds the time from accept, or from the previous response on a kept-alive connection, to the end
/// of the headers. Connections past it are shut down by a sweep thread: libmicrohttpd then reads the end
/// of the stream and closes them itself.
///
/// Once every slot is taken, a connection that has waited `crowdedGraceSeconds` without complete headers
/// is shut down too: a scraper that waited in the listen backlog has sent its request by the time it is
/// accepted, so it is never the one closed, and it gets a slot within about that grace.
final class RequestHeaderDeadlines: @unchecked Sendable {
    private let limitSeconds: Double
    private let crowdedGraceSeconds: Double
    private let connectionLimit: Int
    private let now: @Sendable () -> Double
    private let closedBeforeAnyRequest: @Sendable () -> Void
    /// Guards everything below; the sweep thread waits on it for the next deadline.
    private let condition = NSCondition()
    /// Every open connection by its libmicrohttpd handle: its socket, since when it has been waiting for
    /// request headers (nil while a request is under way), and whether it has had a response.
    private var connections: [UInt: (socket: Int32, waitingSince: Double?, answered: Bool)] = [:]
    private var sweeping = false

    /// `closedBeforeAnyRequest` hears of each connection shut down before it completed a request: a slow
    /// or stalled client (a kept-alive connection idle past the limit is shut down too, but not counted).
    init(
        limitSeconds: Double, crowdedGraceSeconds: Double = 1, connectionLimit: Int,
        now: @escaping @Sendable () -> Double, closedBeforeAnyRequest: @escaping @Sendable () -> Void
    ) {
        self.limitSeconds = limitSeconds
        self.crowdedGraceSeconds = min(crowdedGraceSeconds, limitSeconds)
        self.connectionLimit = connectionLimit
        self.now = now
        self.closedBeforeAnyRequest = closedBeforeAnyRequest
    }

    func startSweeping() {
        condition.withLock { sweeping = true }
        Thread.detachNewThread { [self] in sweep() }
    }

    /// Ends the sweep thread (it holds the only other reference).
    func stopSweeping() {
        condition.withLock {
            sweeping = false
            condition.signal()
        }
    }

    // MARK: From libmicrohttpd's threads

    func accepted(_ connection: OpaquePointer, socket: Int32) {
        condition.withLock {
            connections[key(connection)] = (socket, now(), false)
            // The connection may fill the last slot, which brings the crowded deadlines forward.
            condition.signal()
        }
    }

    func headersReceived(_ connection: OpaquePointer) {
        condition.withLock { connections[key(connection)]?.waitingSince = nil }
    }

    /// A response went out: a kept-alive connection waits for its next request from now.
    func responded(_ connection: OpaquePointer) {
        condition.withLock {
            connections[key(connection)]?.waitingSince = now()
            connections[key(connection)]?.answered = true
        }
    }

    /// Called before libmicrohttpd closes the socket, so a sweep never shuts down a reused descriptor.
    func closing(_ connection: OpaquePointer) {
        condition.withLock { _ = connections.removeValue(forKey: key(connection)) }
    }

    // MARK: The sweep

    private func key(_ connection: OpaquePointer) -> UInt { UInt(bitPattern: Int(bitPattern: connection)) }

    private func sweep() {
        condition.lock()
        while sweeping {
            let moment = now()
            let limit = connections.count >= connectionLimit ? crowdedGraceSeconds : limitSeconds
            var next = Double.infinity
            for (connection, (socket, waitingSince, answered)) in connections {
                guard let waitingSince else { continue }
                if moment - waitingSince >= limit {
                    // Counted first, so that whoever takes the freed slot sees it counted. Under the lock, so
                    // the connection cannot be closed and its descriptor reused meanwhile; it stays listed, no
                    // longer waiting, until libmicrohttpd closes it.
                    if !answered { closedBeforeAnyRequest() }
                    shutdown(socket, Int32(SHUT_RDWR))
                    connections[connection]?.waitingSince = nil
                } else {
                    next = min(next, waitingSince + limit)
                }
            }
            _ = condition.wait(until: Date(timeIntervalSinceNow: next.isFinite ? next - moment : 3_600))
        }
        condition.unlock()
    }
}
