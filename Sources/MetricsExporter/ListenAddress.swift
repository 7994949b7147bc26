#if canImport(Glibc)
    import Glibc
#endif

/// The socket address the endpoint binds to: an IPv4 or IPv6 literal, or a host name resolved once at
/// start (its first IPv4 address if it has one: `localhost` is 127.0.0.1, as clients expect).
struct ListenAddress {
    var storage = sockaddr_storage()
    var isIPv6 = false

    static func resolve(host: String, port: Int) throws(ExporterError) -> ListenAddress {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var results: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &results)
        defer { if let results { freeaddrinfo(results) } }
        var first = results
        while let candidate = first, candidate.pointee.ai_family != AF_INET, candidate.pointee.ai_next != nil {
            first = candidate.pointee.ai_next
        }
        if first?.pointee.ai_family != AF_INET { first = results }
        guard status == 0, let first, let address = first.pointee.ai_addr else {
            let reason = status == 0 ? "no address" : String(cString: gai_strerror(status))
            throw ExporterError(description: "metrics host '\(host)' does not resolve: \(reason)")
        }
        var resolved = ListenAddress()
        resolved.isIPv6 = first.pointee.ai_family == AF_INET6
        withUnsafeMutableBytes(of: &resolved.storage) { storage in
            storage.copyMemory(from: UnsafeRawBufferPointer(start: address, count: Int(first.pointee.ai_addrlen)))
        }
        return resolved
    }
}
