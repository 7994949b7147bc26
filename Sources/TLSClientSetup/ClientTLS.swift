import NIOCore
import NIOSSL

/// What every TLS client of this project does the same way, whether it connects to a replication
/// server or to Redis.
public enum ClientTLS {
    /// TLS 1.2 at least; the server's certificate must chain to the PEM certificates in `trustFile`
    /// (the system's roots when nil). Throws NIOSSL's error when that file cannot be read.
    public static func configuration(trusting trustFile: String?) throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let trustFile { configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(trustFile)) }
        return configuration
    }

    /// The handler for a connection to `host`: a name is sent as SNI and checked against the certificate;
    /// an address literal has no name to send, so the certificate's IP address is checked against it.
    public static func handler(context: NIOSSLContext, connectingTo host: String) throws -> NIOSSLClientHandler {
        let isAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        return try NIOSSLClientHandler(context: context, serverHostname: isAddress ? nil : host)
    }
}
