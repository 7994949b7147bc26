import Credentials
import Foundation
import ReplicationTestSupport
import Testing

/// The TLS listener, `tail`/`publish` and a relay connecting over it, with and without client
/// certificates: real processes, certificates made by `openssl`.
@Suite(.serialized) struct TransportSecurityTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)").path

    func rows(_ tokens: ClosedRange<Int>) -> String {
        tokens.map { #"{"stream": "caches", "token": \#($0), "row": ["get_user_by_id", ["@u\#($0):test.local"], \#($0)]}"# }
            .joined(separator: "\n") + "\n"
    }

    func publish(_ text: String, port: Int, _ options: [String]) throws -> ProcessResult {
        let file = directory + "/rows-\(UUID().uuidString).jsonl"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        return try runProcess(
            sidecarExecutable.path, ["publish", "--connect", "127.0.0.1:\(port)", "--name", "pub"] + options + [file])
    }

    /// Runs `tail` until it has printed `count` rows; returns their tokens.
    func tail(port: Int, _ options: [String], count: Int, serverName: String = "localhost") throws -> [Int] {
        let tail = try TailProcess(
            ["--connect", "127.0.0.1:\(port)", "--server-name", serverName, "--streams", "caches", "--from", "0"] + options)
        defer { tail.stop() }
        return try tail.waitForLines(count).map { line in
            let object = try! JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            return object["token"] as! Int
        }
    }

    @Test func publishAndTailOverTLS() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try TestCertificates(in: directory + "/pki")
        let server = try SidecarProcess(
            serve: ["--writer", "pub", "--in-memory", "--tls-port", "0", "--tls-cert", certificates.serverCertificate,
                    "--tls-key", certificates.serverKey])
        let tlsPort = try #require(server.tlsPort)
        let tls = ["--tls", "--ca", certificates.caCertificate]
        let published = try publish(rows(1...3), port: tlsPort, tls)
        #expect(published.status == 0, "\(published.errors)")
        #expect(try tail(port: tlsPort, tls, count: 3) == [1, 2, 3])
        // The plain listener serves the same log.
        #expect(try tail(port: server.port, [], count: 3) == [1, 2, 3])

        // A server certificate from another CA is refused.
        let strangers = try TestCertificates(in: directory + "/other-pki")
        let refused = try publish(rows(4...4), port: tlsPort, ["--tls", "--ca", strangers.caCertificate])
        #expect(refused.status == 1)
        #expect(refused.errors.contains("TLS refused: "), "\(refused.errors)")  // not retried: it would fail again
        #expect(server.terminate() == 0)
    }

    @Test func aClientCertificateIsRequiredWithTLSClientCA() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try TestCertificates(in: directory + "/pki")
        let server = try SidecarProcess(
            serve: ["--writer", "pub", "--in-memory", "--tls-port", "0", "--tls-cert", certificates.serverCertificate,
                    "--tls-key", certificates.serverKey, "--tls-client-ca", certificates.caCertificate])
        let tlsPort = try #require(server.tlsPort)
        let withoutCertificate = try publish(rows(1...2), port: tlsPort, ["--tls", "--ca", certificates.caCertificate])
        #expect(withoutCertificate.status == 1)
        #expect(withoutCertificate.errors.contains("TLS refused: "), "\(withoutCertificate.errors)")
        let withCertificate = try publish(
            rows(1...2), port: tlsPort,
            ["--tls", "--ca", certificates.caCertificate, "--cert", certificates.clientCertificate,
             "--key", certificates.clientKey])
        #expect(withCertificate.status == 0, "\(withCertificate.errors)")
        #expect(server.terminate() == 0)
    }

    /// A writer listed with credentials whose verified client certificate names it publishes without
    /// `AUTH`; the same certificate does nothing for another writer's name, on the plain listener, or on a
    /// TLS listener that does not ask for client certificates.
    @Test func aClientCertificateNamingAWriterStandsInForAuth() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try TestCertificates(in: directory + "/pki", clientName: "pub")
        let credentials = directory + "/writers"
        let hash = PasswordHash.make(password: "s3cret", cost: 4)!.text
        try "pub:\(hash)\npub2:\(hash)\n".write(toFile: credentials, atomically: true, encoding: .utf8)
        let listener = [
            "--writer-credentials", credentials, "--in-memory", "--tls-port", "0",
            "--tls-cert", certificates.serverCertificate, "--tls-key", certificates.serverKey,
        ]
        let withCertificate = [
            "--tls", "--ca", certificates.caCertificate, "--cert", certificates.clientCertificate,
            "--key", certificates.clientKey,
        ]
        let server = try SidecarProcess(serve: listener + ["--tls-client-ca", certificates.caCertificate])
        let tlsPort = try #require(server.tlsPort)
        let published = try publish(rows(1...3), port: tlsPort, withCertificate)
        #expect(published.status == 0, "\(published.errors)")
        #expect(try tail(port: server.port, [], count: 3) == [1, 2, 3])

        let file = directory + "/more.jsonl"
        try rows(4...4).write(toFile: file, atomically: true, encoding: .utf8)
        let otherName = try runProcess(
            sidecarExecutable.path,
            ["publish", "--connect", "127.0.0.1:\(tlsPort)", "--name", "pub2"] + withCertificate + [file])
        #expect(otherName.status == 1)
        #expect(otherName.errors.contains("not authorised"), "\(otherName.errors)")
        let plain = try publish(rows(4...4), port: server.port, [])
        #expect(plain.status == 1)
        #expect(plain.errors.contains("not authorised"), "\(plain.errors)")
        #expect(server.terminate() == 0)

        // Without --tls-client-ca the listener asks for no certificate: the client's is never seen.
        let unverified = try SidecarProcess(serve: listener)
        let refused = try publish(rows(1...1), port: try #require(unverified.tlsPort), withCertificate)
        #expect(refused.status == 1)
        #expect(refused.errors.contains("not authorised"), "\(refused.errors)")
        #expect(unverified.terminate() == 0)
    }

    @Test func aRelayConnectsToItsUpstreamOverTLS() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try TestCertificates(in: directory + "/pki")
        let hub = try SidecarProcess(
            serve: ["--writer", "pub", "--in-memory", "--server-name", "hub.local", "--tls-port", "0",
                    "--tls-cert", certificates.serverCertificate, "--tls-key", certificates.serverKey])
        let relay = try SidecarProcess(
            serve: ["--in-memory", "--server-name", "relay.local", "--upstream", "127.0.0.1:\(try #require(hub.tlsPort))",
                    "--upstream-server-name", "hub.local", "--upstream-tls", "--upstream-ca", certificates.caCertificate])
        let published = try publish(rows(1...3), port: hub.port, ["--server-name", "hub.local"])
        #expect(published.status == 0, "\(published.errors)")
        #expect(try tail(port: relay.port, [], count: 3, serverName: "relay.local") == [1, 2, 3])
        #expect(relay.terminate() == 0)
        #expect(hub.terminate() == 0)
    }

    @Test func tlsFlagsWithoutTheirPartnersAreRefused() throws {
        for (arguments, message) in [
            (["--tls-port", "0"], "--tls-port needs --tls-cert and --tls-key"),
            (["--tls-cert", "x.pem"], "--tls-cert, --tls-key and --tls-client-ca need --tls-port"),
            (["--upstream-tls"], "--upstream-tls needs --upstream HOST:PORT"),
            (["--tls-port", "0", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "cannot use certificate"),
        ] {
            let result = try runProcess(sidecarExecutable.path, ["serve", "--in-memory", "--port", "0"] + arguments)
            #expect(result.status != 0)
            #expect(result.errors.contains(message), "\(arguments): \(result.errors)")
        }
    }
}
