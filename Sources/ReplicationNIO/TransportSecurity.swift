import Credentials
import NIOCore
import NIOSSL
import NIOTLS
import TLSClientSetup

/// TLS for the replication links this project owns (Synapse 1.6's workers speak plain TCP only).
public enum TransportSecurity {
    /// Whether a connection failed because one side did not trust the other's certificate (or had none
    /// to show): connecting again fails the same way. A TLS connection cut without its closing message
    /// is not that.
    public static func refusedTrust(_ error: any Error) -> Bool {
        switch error {
        case NIOSSLError.uncleanShutdown: false
        case is NIOSSLError, is BoringSSLError: true
        default: false
        }
    }

    /// A listener's context from PEM files. With `clientCA`, a client must present a certificate that
    /// CA signed, or the handshake fails.
    public static func serverContext(certificate: String, key: String, clientCA: String?) throws(TLSSetupError)
        -> NIOSSLContext
    {
        do {
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            configuration.minimumTLSVersion = .tlsv12
            if let clientCA {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCA))
                // Clients connect from any address: their certificate is checked against the CA only.
                configuration.certificateVerification = .noHostnameVerification
            }
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError("cannot use certificate \(certificate) and key \(key): \(error)")
        }
    }

    /// A client's context: the server's certificate is checked against `ca` (the system's roots when
    /// nil) and against the host connected to; `certificate`/`key` are presented when the server asks.
    public static func clientContext(ca: String?, certificate: String? = nil, key: String? = nil)
        throws(TLSSetupError) -> NIOSSLContext
    {
        do {
            var configuration = try ClientTLS.configuration(trusting: ca)
            if let certificate, let key {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError("cannot set up TLS with CA \(ca ?? "(system)"): \(error)")
        }
    }

    /// The common name of the client's certificate, when `event` is the end of a TLS handshake in which
    /// the client presented one. A listener asks for one only with a client CA (``serverContext(certificate:
    /// key:clientCA:)``), and then the handshake succeeds only with a certificate that CA signed.
    static func certifiedClientName(after event: Any, on pipeline: ChannelPipeline) -> String? {
        guard case TLSUserEvent.handshakeCompleted = event,
            let certificate = try? pipeline.syncOperations.nioSSL_peerCertificate(),
            let der = try? certificate.toDERBytes()
        else { return nil }
        return CertificateSubject.commonName(der: der)
    }
}

public struct TLSSetupError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
