import NIOConcurrencyHelpers
import NIOCore
import ReplicationCore

#if canImport(Glibc)
import Glibc
#endif

/// Addresses written as CIDR (`10.1.0.0/16`, `fd00::/8`), or one address (`127.0.0.1`).
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6, with the bits past the prefix cleared.
    private let network: [UInt8]
    private let prefixLength: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let bytes = Self.addressBytes(String(parts[0])) else { return nil }
        let length: Int
        if parts.count == 2 {
            guard let given = Int(parts[1]), (0...bytes.count * 8).contains(given) else { return nil }
            length = given
        } else {
            length = bytes.count * 8
        }
        self.prefixLength = length
        self.network = Self.masked(bytes, to: length)
    }

    public var description: String { "\(Self.text(of: network))/\(prefixLength)" }

    /// Whether the address is in the range; an IPv4 peer seen on an IPv6 socket (`::ffff:a.b.c.d`)
    /// counts as that IPv4 address.
    public func contains(_ address: SocketAddress) -> Bool {
        guard var bytes = Self.bytes(of: address) else { return false }
        if network.count == 4, bytes.count == 16, bytes[0..<12] == Self.ipv4MappedPrefix[...] {
            bytes = Array(bytes[12...])
        }
        return bytes.count == network.count && Self.masked(bytes, to: prefixLength) == network
    }

    private static let ipv4MappedPrefix: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]

    private static func masked(_ bytes: [UInt8], to length: Int) -> [UInt8] {
        bytes.enumerated().map { index, byte in
            let bits = min(8, max(0, length - index * 8))
            return bits == 8 ? byte : byte & ~(UInt8(0xff) >> bits)
        }
    }

    private static func addressBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    private static func bytes(of address: SocketAddress) -> [UInt8]? {
        switch address {
        case .v4(let v4):
            var raw = v4.address.sin_addr
            return withUnsafeBytes(of: &raw) { Array($0) }
        case .v6(let v6):
            var raw = v6.address.sin6_addr
            return withUnsafeBytes(of: &raw) { Array($0) }
        case .unixDomainSocket:
            return nil
        }
    }

    private static func text(of bytes: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        _ = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Who may open a connection, decided at accept: peers outside `--allow-from` and connections beyond
/// `--max-connections` are closed before they are read from.
final class Admission: Sendable {
    private let allowFrom: [AddressRange]
    private let maxConnections: Int?
    private let open = NIOLockedValueBox(0)

    init(allowFrom: [AddressRange], maxConnections: Int?) {
        self.allowFrom = allowFrom
        self.maxConnections = maxConnections
    }

    /// Why the connection from `peer` may not be served, or nil when it may (it then holds a place
    /// until ``release()``).
    func admit(_ peer: SocketAddress?) -> CloseReason? {
        if !allowFrom.isEmpty {
            guard let peer, allowFrom.contains(where: { $0.contains(peer) }) else { return .notAllowed }
        }
        return open.withLockedValue { open in
            if let maxConnections, open >= maxConnections { return .tooManyConnections }
            open += 1
            return nil
        }
    }

    func release() { open.withLockedValue { $0 -= 1 } }
}
