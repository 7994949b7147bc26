#if canImport(Glibc)
import Glibc
#endif

/// One keep-alive HTTP/1.1 connection with blocking reads: the scraper in benchmarks.
final class BlockingHTTPClient {
    struct Failure: Error { var what: String }

    private let fd: Int32
    private var buffer: [UInt8] = []

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failure(what: "connect") }
    }

    deinit { close(fd) }

    /// Sends a GET and reads the whole response; returns the body's length.
    func get(_ path: String) throws -> Int {
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else {
            throw Failure(what: "send")
        }
        let headerEnd: Int = try {
            while true {
                if let end = find([13, 10, 13, 10]) { return end }
                try fill()
            }
        }()
        let headers = String(decoding: buffer[..<headerEnd], as: UTF8.self).lowercased()
        guard let lengthLine = headers.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
            let length = Int(lengthLine.dropFirst("content-length:".count).trimmingPrefix(" "))
        else { throw Failure(what: "no content-length") }
        let total = headerEnd + 4 + length
        while buffer.count < total { try fill() }
        buffer.removeFirst(total)
        return length
    }

    private func find(_ pattern: [UInt8]) -> Int? {
        guard buffer.count >= pattern.count else { return nil }
        for start in 0...(buffer.count - pattern.count) where buffer[start..<(start + pattern.count)].elementsEqual(pattern) {
            return start
        }
        return nil
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { throw Failure(what: "recv") }
        buffer += chunk[0..<count]
    }
}
