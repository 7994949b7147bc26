import NIOSSL
import TLSClientSetup

/// Where a Redis server is and how to log in: parsed from `redis://[[user]:password@]host[:port][/db]`, or
/// `rediss://…` for TLS.
public struct RedisEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// The ACL user for `AUTH user password` (Redis 6+); nil sends `AUTH password`.
    public var username: String?
    public var password: String?
    /// The database `SELECT`ed after connecting (publish/subscribe ignores it: channels are global).
    public var database: Int
    /// Set for `rediss://`: the connection is TLS, and the server's certificate is checked.
    public var tls: RedisTLS?

    public init(
        host: String, port: Int = 6379, username: String? = nil, password: String? = nil, database: Int = 0,
        tls: RedisTLS? = nil
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
    }

    /// Parses a `redis://` or `rediss://` URL; the error says what to fix. User and password may be
    /// percent-encoded. A `rediss://` server's certificate is checked against the system's roots until
    /// ``withCertificateAuthority(file:)`` names a CA.
    public init(url: String) throws(RedisURLError) {
        var rest: Substring
        if url.hasPrefix("redis://") {
            rest = url.dropFirst("redis://".count)
            tls = nil
        } else if url.hasPrefix("rediss://") {
            rest = url.dropFirst("rediss://".count)
            do {
                tls = try RedisTLS(certificateAuthority: nil)
            } catch {
                throw RedisURLError("cannot set up TLS with the system's roots: \(error)")
            }
        } else {
            throw RedisURLError("must start with redis:// or rediss:// (got '\(url)')")
        }
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            guard let colon = credentials.firstIndex(of: ":") else {
                throw RedisURLError("credentials must be [user]:password, as in redis://:secret@host:6379")
            }
            let user = try Self.percentDecoded(credentials[..<colon])
            username = user.isEmpty ? nil : user
            password = try Self.percentDecoded(credentials[credentials.index(after: colon)...])
        }
        var hostAndPort = rest
        database = 0
        if let slash = rest.firstIndex(of: "/") {
            hostAndPort = rest[..<slash]
            let path = rest[rest.index(after: slash)...]
            if !path.isEmpty {
                guard let database = Int(path), database >= 0 else {
                    throw RedisURLError("the database after '/' must be a number from 0, got '\(path)'")
                }
                self.database = database
            }
        }
        port = 6379
        if hostAndPort.hasPrefix("[") {  // [IPv6]:port
            guard let close = hostAndPort.firstIndex(of: "]") else { throw RedisURLError("unclosed '[' in the host") }
            host = String(hostAndPort[hostAndPort.index(after: hostAndPort.startIndex)..<close])
            let after = hostAndPort[hostAndPort.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":" else { throw RedisURLError("expected ':port' after ']'") }
                port = try Self.port(after.dropFirst())
            }
        } else if let colon = hostAndPort.lastIndex(of: ":") {
            host = String(hostAndPort[..<colon])
            port = try Self.port(hostAndPort[hostAndPort.index(after: colon)...])
        } else {
            host = String(hostAndPort)
        }
        guard !host.isEmpty else { throw RedisURLError("the host is missing, as in redis://127.0.0.1:6379") }
    }

    /// The endpoint with its password replaced by the first line of a file's `contents` (e.g. a mounted
    /// secret), so that the password stays out of the command line.
    public func withPassword(fileContents contents: String) throws(RedisURLError) -> RedisEndpoint {
        guard let line = contents.split(whereSeparator: \.isNewline).first, !line.isEmpty else {
            throw RedisURLError("the password file is empty")
        }
        var endpoint = self
        endpoint.password = String(line)
        return endpoint
    }

    /// The endpoint with the server's certificate checked against the CA in a PEM file instead of the
    /// system's roots; only for a `rediss://` endpoint.
    public func withCertificateAuthority(file: String) throws -> RedisEndpoint {
        guard tls != nil else { throw RedisTLSError(description: "a CA file needs a rediss:// URL (TLS)") }
        var endpoint = self
        endpoint.tls = try RedisTLS(certificateAuthority: file)
        return endpoint
    }

    /// The URL without the password, for logs.
    public var description: String {
        let user = username.map { "\($0):***@" } ?? (password == nil ? "" : ":***@")
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return "\(tls == nil ? "redis" : "rediss")://\(user)\(shownHost):\(port)/\(database)"
    }

    private static func port(_ text: Substring) throws(RedisURLError) -> Int {
        guard let port = Int(text), (1...65535).contains(port) else {
            throw RedisURLError("the port must be a number from 1 to 65535, got '\(text)'")
        }
        return port
    }

    private static func percentDecoded(_ text: Substring) throws(RedisURLError) -> String {
        var bytes: [UInt8] = []
        var utf8 = text.utf8[...]
        while let byte = utf8.popFirst() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard utf8.count >= 2, let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16) else {
                throw RedisURLError("a '%' in the credentials must be followed by two hex digits")
            }
            bytes.append(value)
            utf8 = utf8.dropFirst(2)
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw RedisURLError("the credentials are not UTF-8 once percent-decoded")
        }
        return decoded
    }
}

public struct RedisURLError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "invalid Redis URL: \(message)" }
}

/// How a `rediss://` connection checks the server: its certificate must chain to the CA (the system's
/// roots when nil) and name the host connected to.
public struct RedisTLS: Sendable, Equatable {
    public let certificateAuthority: String?
    let context: NIOSSLContext

    /// Fails when the CA file cannot be read as PEM certificates.
    public init(certificateAuthority: String?) throws {
        let configuration: TLSConfiguration
        do {
            configuration = try ClientTLS.configuration(trusting: certificateAuthority)
        } catch {
            throw RedisTLSError(
                description: "cannot read the CA certificates in '\(certificateAuthority ?? "")': \(error)")
        }
        self.certificateAuthority = certificateAuthority
        context = try NIOSSLContext(configuration: configuration)
    }

    public static func == (lhs: RedisTLS, rhs: RedisTLS) -> Bool {
        lhs.certificateAuthority == rhs.certificateAuthority
    }
}

public struct RedisTLSError: Error, Equatable, Sendable, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}
