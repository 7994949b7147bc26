import Credentials
import Foundation
import ReplicationTestSupport
import Testing

/// The subject's common name read from certificates made by `openssl`, and from bytes that are not one.
@Suite struct CertificateSubjectTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subject-\(UUID().uuidString)").path

    /// The DER bytes of a self-signed certificate with `subject` (openssl's `/TYPE=value/…` form).
    func certificate(subject: String) throws -> [UInt8] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let der = directory + "/\(UUID().uuidString).der"
        let made = try runProcess(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-utf8", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", directory + "/key.pem", "-outform", "DER", "-out", der, "-days", "1", "-subj", subject,
            ])
        #expect(made.status == 0, "\(made.errors)")
        return Array(try Data(contentsOf: URL(fileURLWithPath: der)))
    }

    @Test func theLastCommonNameOfTheSubjectIsRead() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(CertificateSubject.commonName(der: try certificate(subject: "/CN=pub")) == "pub")
        #expect(CertificateSubject.commonName(der: try certificate(subject: "/O=Example/CN=first/CN=pub")) == "pub")
        #expect(CertificateSubject.commonName(der: try certificate(subject: "/CN=schreiber-ü")) == "schreiber-ü")
        #expect(CertificateSubject.commonName(der: try certificate(subject: "/O=no common name")) == nil)
    }

    @Test func bytesThatAreNotACertificateHaveNoName() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let der = try certificate(subject: "/CN=pub")
        // Every cut short is refused: the outer length no longer fits.
        for length in 0..<der.count {
            #expect(CertificateSubject.commonName(der: Array(der[..<length])) == nil)
        }
        // Every byte changed gives a name or none, and never a read beyond the bytes (ASan would see it).
        for index in der.indices {
            var changed = der
            changed[index] ^= 0xFF
            _ = CertificateSubject.commonName(der: changed)
        }
        #expect(CertificateSubject.commonName(der: [0x30, 0x80, 0x30, 0x00]) == nil)  // indefinite length
        #expect(CertificateSubject.commonName(der: [0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]) == nil)
    }
}
