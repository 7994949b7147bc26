#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct SocketError: Error, CustomStringConvertible {
    public var description: String
    public init(_ message: String) { description = message }
    /// The failed call with the system's error text.
    init(system call: String) { description = "\(call): \(String(cString: strerror(errno)))" }
}

/// A plain blocking TCP client that speaks lines: the test's stand-in for a worker. Reading waits with
/// `poll` up to a deadline, so no test ever sleeps for "long enough".
public final class LineSocket: @unchecked Sendable {  // used by one thread at a time
    public private(set) var fd: Int32
    private var buffer: [UInt8] = []
    private var readOffset = 0

    /// Connects to `127.0.0.1:port`. A small `receiveBuffer` makes the connection fill up quickly when the
    /// test stops reading.
    /// `source` binds the client to another loopback address (`127.0.0.2`…), so that a test can be several
    /// clients.
    public init(port: Int, receiveBuffer: Int? = nil, source: String? = nil) throws {
        ignoreBrokenPipes()
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SocketError(system: "socket") }
        if var size = receiveBuffer.map(Int32.init) {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else {
                let error = SocketError(system: "bind \(source)")
                close()
                throw error
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let error = SocketError(system: "connect")
            // Through close(), which forgets the descriptor: deinit runs after a throw too, and closing it
            // again could close a descriptor the process has reused meanwhile (a NIO channel's).
            close()
            throw error
        }
    }

    deinit { close() }

    /// Closes the socket (also done when it is released).
    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    /// Closes the socket with a TCP reset (`SO_LINGER` 0) instead of a FIN.
    public func reset() {
        var resetOnClose = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &resetOnClose, socklen_t(MemoryLayout<linger>.size))
        close()
    }

    /// Sends text as it is (add the `\n` yourself).
    public func send(_ text: String) throws {
        try send(Array(text.utf8))
    }

    public func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw SocketError(system: "send") }
            sent += n
        }
    }

    /// Sends without blocking as much as the kernel takes; returns the bytes sent.
    public func sendWithoutBlocking(_ bytes: [UInt8]) -> Int {
        let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        return max(0, n)
    }

    /// The next line without its `\n`; `nil` at end of stream. Throws if nothing arrives before the deadline.
    public func readLine(timeoutMillis: Int32 = 10_000) throws -> String? {
        while true {
            if let newline = buffer[readOffset...].firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[readOffset..<newline], as: UTF8.self)
                readOffset = newline + 1
                if readOffset > 65536 {
                    buffer.removeFirst(readOffset)
                    readOffset = 0
                }
                return line
            }
            guard try fill(timeoutMillis: timeoutMillis) else { return nil }
        }
    }

    /// Exactly `count` raw bytes; throws on end of stream or timeout.
    public func readBytes(_ count: Int, timeoutMillis: Int32 = 10_000) throws -> [UInt8] {
        while buffer.count - readOffset < count {
            guard try fill(timeoutMillis: timeoutMillis) else { throw SocketError("end of stream in a \(count)-byte read") }
        }
        let bytes = Array(buffer[readOffset..<(readOffset + count)])
        readOffset += count
        return bytes
    }

    /// Exactly `count` lines; throws on end of stream or timeout.
    public func readLines(_ count: Int, timeoutMillis: Int32 = 10_000) throws -> [String] {
        var lines: [String] = []
        lines.reserveCapacity(count)
        while lines.count < count {
            guard let line = try readLine(timeoutMillis: timeoutMillis) else {
                throw SocketError("end of stream after \(lines.count) of \(count) lines")
            }
            lines.append(line)
        }
        return lines
    }

    /// Reads lines until one satisfies `predicate`; returns every line read, that one last.
    public func readLines(until predicate: (String) -> Bool, timeoutMillis: Int32 = 10_000) throws -> [String] {
        var lines: [String] = []
        while true {
            guard let line = try readLine(timeoutMillis: timeoutMillis) else {
                throw SocketError("end of stream before the expected line; read \(lines.suffix(3))")
            }
            lines.append(line)
            if predicate(line) { return lines }
        }
    }

    /// Whether the peer closed the connection (end of stream), reading and discarding anything before it.
    public func readsEndOfStream(timeoutMillis: Int32 = 10_000) throws -> Bool {
        while try readLine(timeoutMillis: timeoutMillis) != nil {}
        return true
    }

    private func fill(timeoutMillis: Int32) throws -> Bool {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&poller, 1, timeoutMillis)
        guard ready > 0 else { throw SocketError(system: ready == 0 ? "timed out waiting for data" : "poll") }
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 {
            if errno == ECONNRESET { return false }
            throw SocketError(system: "recv")
        }
        if n == 0 { return false }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }
}

/// Writing to a peer that has gone must be an error, never the death of the test process.
public func ignoreBrokenPipes() {
    signal(SIGPIPE, SIG_IGN)
}
