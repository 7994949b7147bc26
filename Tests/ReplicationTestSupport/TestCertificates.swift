import Foundation

/// A CA, a server certificate (for 127.0.0.1 and localhost unless told otherwise) and a client certificate,
/// all signed by the CA, made with `openssl` in a directory of the test's own (P-256 keys, valid one day).
public struct TestCertificates: Sendable {
    public let directory: String
    public var caCertificate: String { directory + "/ca.pem" }
    public var serverCertificate: String { directory + "/server.pem" }
    public var serverKey: String { directory + "/server.key" }
    public var clientCertificate: String { directory + "/client.pem" }
    public var clientKey: String { directory + "/client.key" }

    /// What the server certificate names (its `subjectAltName`).
    public let serverNames: String

    /// Makes the files; `clientName` is the client certificate's common name.
    public init(in directory: String, clientName: String = "pub", serverNames: String = "IP:127.0.0.1,DNS:localhost")
        throws
    {
        self.directory = directory
        self.serverNames = serverNames
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try Self.openssl(["req", "-x509"] + key + ["-keyout", directory + "/ca.key", "-out", caCertificate, "-days", "1", "-subj", "/CN=replication test CA"])
        try renewServerCertificate()
        try issue("client", subject: "/CN=\(clientName)", extensions: "extendedKeyUsage=clientAuth\n")
    }

    /// Replaces the server certificate and key with new ones (same names, same CA).
    public func renewServerCertificate() throws {
        try issue("server", subject: "/CN=localhost", extensions: "subjectAltName=\(serverNames)\nextendedKeyUsage=serverAuth\n")
    }

    /// The SHA-256 fingerprint of a certificate file, as openssl prints it.
    public func fingerprint(of certificate: String) throws -> String {
        try Self.openssl(["x509", "-in", certificate, "-noout", "-fingerprint", "-sha256"])
    }

    private func issue(_ name: String, subject: String, extensions: String) throws {
        let extensionsFile = directory + "/\(name).ext"
        try extensions.write(toFile: extensionsFile, atomically: true, encoding: .utf8)
        try Self.openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", directory + "/\(name).key", "-out", directory + "/\(name).csr", "-subj", subject])
        try Self.openssl(["x509", "-req", "-in", directory + "/\(name).csr", "-CA", caCertificate, "-CAkey", directory + "/ca.key", "-CAcreateserial", "-out", directory + "/\(name).pem", "-days", "1", "-extfile", extensionsFile])
    }

    @discardableResult
    private static func openssl(_ arguments: [String]) throws -> String {
        let result = try runProcess("/usr/bin/openssl", arguments)
        guard result.status == 0 else { throw SocketError("openssl \(arguments.first ?? ""): \(result.errors)") }
        return result.output
    }
}
