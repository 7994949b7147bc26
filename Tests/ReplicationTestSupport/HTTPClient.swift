/// A minimal HTTP/1.1 exchange over one ``LineSocket``, so tests can see keep-alive and raw headers.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: [UInt8]
    public var text: String { String(decoding: body, as: UTF8.self) }
}

extension LineSocket {
    /// Sends one request and reads its response (`Content-Length` bodies; none for HEAD).
    public func http(
        _ method: String = "GET", _ path: String, headers: [String: String] = [:], body: String = ""
    ) throws -> HTTPResponse {
        var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        if !body.isEmpty { request += "Content-Length: \(body.utf8.count)\r\n" }
        request += "\r\n" + body
        try send(request)
        guard let statusLine = try readLine(), statusLine.hasPrefix("HTTP/1.1 ") else {
            throw SocketError("no HTTP status line")
        }
        let status = Int(statusLine.split(separator: " ")[1])!
        var responseHeaders: [String: String] = [:]
        while let line = try readLine(), line != "\r" {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let value = line[line.index(after: colon)...].trimmingCharacters(in: " \r")
            responseHeaders[line[..<colon].lowercased()] = value
        }
        let length = method == "HEAD" ? 0 : Int(responseHeaders["content-length"] ?? "0")!
        return HTTPResponse(status: status, headers: responseHeaders, body: try readBytes(length))
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String {
        String(drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}
