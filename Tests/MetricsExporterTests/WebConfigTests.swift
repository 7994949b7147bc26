import Credentials
import Foundation
import MetricsExporter
import ReplicationTestSupport
import Testing

/// `--web.config.file` in exporter-toolkit's format: parsing, bcrypt users, TLS with `min_version` and
/// client certificates (curl and openssl as the clients), and a certificate replaced while running.
@Suite(.serialized) struct WebConfigTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("web-\(UUID().uuidString)").path
    static let hash = PasswordHash.make(password: "s3cret", cost: 4)!.text

    @discardableResult
    func write(_ text: String, to name: String = "web.yml") throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func endpoint(_ path: String) throws -> Endpoint {
        let security = try EndpointSecurity.load(webConfigFile: path)
        return try Endpoint { $0.security = security }
    }

    func curl(_ arguments: [String]) throws -> ProcessResult {
        try runProcess("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}"] + arguments)
    }

    @Test func aConfigWithTLSAndUsersIsRead() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try TestCertificates(in: directory + "/pki")
        let path = try write(
            """
            tls_server_config:
              cert_file: pki/server.pem
              key_file: \(certificates.serverKey)
              client_auth_type: RequireAndVerifyClientCert
              client_ca_file: pki/ca.pem
              min_version: TLS13
            basic_auth_users:
              prometheus: \(Self.hash)
            """)
        let security = try EndpointSecurity.load(webConfigFile: path)
        let tls = try #require(security.tls)
        #expect(tls.certificatePEM == (try String(contentsOfFile: certificates.serverCertificate, encoding: .utf8)))
        #expect(tls.clientAuth == .requireAndVerify && tls.minVersion == .tls13 && tls.clientCAPEM != nil)
        #expect(security.users?.verify(name: "prometheus", password: "s3cret") == true)
    }

    @Test(arguments: [
        ("basic_auth_users:\n  prometheus: hunter2\n", "the password of prometheus in basic_auth_users is not a bcrypt hash"),
        ("basic_auth_users:\n  prometheus: hunter2\n", "htpasswd -nB prometheus"),
        ("http_server_config:\n  http2: false\n", "http_server_config in the top level is not supported"),
        ("tls_server_config:\n  cert_file: a.pem\n", "cert_file: cannot read"),
        ("tls_server_config:\n  key_file: a.pem\n", "needs cert_file and key_file"),
        ("- just\n- a list\n", "expected a mapping"),
        ("basic_auth_users: [\n", "not valid YAML"),
    ])
    func badConfigsAreRefusedWithWhatToFix(text: String, message: String) throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = try write(text)
        #expect {
            try EndpointSecurity.load(webConfigFile: path)
        } throws: { error in
            "\(error)".hasPrefix(path + ": ") && "\(error)".contains(message)
        }
    }

    @Test func bcryptUsersAndAWrongPassword() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let endpoint = try endpoint(try write("basic_auth_users:\n  prometheus: \(Self.hash)\n"))
        let url = "http://127.0.0.1:\(endpoint.port)/metrics"
        #expect(try curl(["-u", "prometheus:s3cret", url]).output == "200")
        #expect(try curl(["-u", "prometheus:wrong", url]).output == "401")
        #expect(try curl([url]).output == "401")
    }

    @Test func minVersionRefusesOlderTLS() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try TestCertificates(in: directory + "/pki")
        let endpoint = try endpoint(
            try write("tls_server_config:\n  cert_file: pki/server.pem\n  key_file: pki/server.key\n  min_version: TLS13\n"))
        let url = "https://127.0.0.1:\(endpoint.port)/metrics"
        #expect(try curl(["--cacert", certificates.caCertificate, "--tlsv1.3", url]).output == "200")
        let old = try curl(["--cacert", certificates.caCertificate, "--tlsv1.2", "--tls-max", "1.2", url])
        #expect(old.status != 0 && old.output != "200")
    }

    @Test func requireAndVerifyClientCertificate() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try TestCertificates(in: directory + "/pki")
        let strangers = try TestCertificates(in: directory + "/other-pki")
        let endpoint = try endpoint(
            try write(
                """
                tls_server_config:
                  cert_file: pki/server.pem
                  key_file: pki/server.key
                  client_auth_type: RequireAndVerifyClientCert
                  client_ca_file: pki/ca.pem
                """))
        let url = "https://127.0.0.1:\(endpoint.port)/metrics"
        let ca = ["--cacert", certificates.caCertificate]
        #expect(try curl(ca + ["--cert", certificates.clientCertificate, "--key", certificates.clientKey, url]).output == "200")
        #expect(try curl(ca + [url]).output != "200")
        #expect(try curl(ca + ["--cert", strangers.clientCertificate, "--key", strangers.clientKey, url]).output != "200")
        #expect(try curl(ca + ["https://127.0.0.1:\(endpoint.port)/healthz"]).output != "200")
    }

    @Test func aCertificateReplacedWhileRunningIsPickedUp() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try TestCertificates(in: directory + "/pki")
        let path = try write(
            "tls_server_config:\n  cert_file: pki/server.pem\n  key_file: pki/server.key\nbasic_auth_users:\n  prometheus: \(Self.hash)\n")
        let endpoint = try endpoint(path)
        let watcher = WebConfigWatcher(path: path, server: endpoint.server) { _, _ in }
        /// The fingerprint of the certificate the endpoint serves to a new connection.
        func served() throws -> String {
            let result = try runProcess(
                "/bin/sh",
                ["-c", "openssl s_client -connect 127.0.0.1:\(endpoint.port) </dev/null 2>/dev/null"
                    + " | openssl x509 -noout -fingerprint -sha256"])
            return result.output
        }
        let before = try certificates.fingerprint(of: certificates.serverCertificate)
        #expect(try served() == before)

        try certificates.renewServerCertificate()
        let after = try certificates.fingerprint(of: certificates.serverCertificate)
        #expect(after != before)
        watcher.checkNow()
        #expect(try served() == after)
        let url = "https://127.0.0.1:\(endpoint.port)/metrics"
        #expect(try curl(["--cacert", certificates.caCertificate, "-u", "prometheus:s3cret", url]).output == "200")

        // A broken file leaves the settings in force; users change without touching TLS.
        try "tls_server_config: [".write(toFile: path, atomically: true, encoding: .utf8)
        watcher.checkNow()
        #expect(try served() == after)
        let newHash = PasswordHash.make(password: "rotated", cost: 4)!.text
        try write(
            "tls_server_config:\n  cert_file: pki/server.pem\n  key_file: pki/server.key\nbasic_auth_users:\n  prometheus: \(newHash)\n")
        watcher.checkNow()
        #expect(try curl(["--cacert", certificates.caCertificate, "-u", "prometheus:s3cret", url]).output == "401")
        #expect(try curl(["--cacert", certificates.caCertificate, "-u", "prometheus:rotated", url]).output == "200")
    }
}
