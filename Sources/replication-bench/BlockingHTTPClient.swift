#if canImport(Glibc)
import Glibc
#endif

/// One keep-alive HTTP/1.1 connection with blocking reads: the scraper in benchmarks.
final class BlockingHTTPClient {
    struct Failure: Error { var what: String }

    private let fd: Int32
    private var buffer: [UInt8] = []

    init(port: Int) throws {
        fd = try LoopbackSocket.connect(port: port)
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
