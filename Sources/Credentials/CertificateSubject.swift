/// The common name (CN) in the subject of an X.509 certificate, read from its DER bytes.
///
/// swift-nio-ssl verifies a client's certificate but keeps the subject's common name internal, so the few
/// DER elements on the way to it are read here: `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
/// [0] version OPTIONAL, serialNumber, signature, issuer, validity, subject, … }, … }`, the subject being
/// a SEQUENCE of SETs of `SEQUENCE { OID, value }`. Every length is checked against what encloses it, so
/// any bytes at all give a name or `nil`, never a read out of bounds.
public enum CertificateSubject {
    /// The subject's last common name (the most significant one, as TLS libraries take it), when it is a
    /// UTF8String, PrintableString or IA5String of valid UTF-8; `nil` when there is none or the bytes are
    /// not a certificate.
    public static func commonName(der: [UInt8]) -> String? {
        var outer = DERReader(der[...])
        guard let certificate = outer.read(tag: sequence) else { return nil }
        var inCertificate = DERReader(certificate)
        guard let toBeSigned = inCertificate.read(tag: sequence) else { return nil }
        var fields = DERReader(toBeSigned)
        if fields.peekTag == versionTag { guard fields.read(tag: versionTag) != nil else { return nil } }
        // serialNumber, signature, issuer, validity, then the subject.
        for _ in 0..<4 { guard fields.read() != nil else { return nil } }
        guard let subject = fields.read(tag: sequence) else { return nil }
        var names = DERReader(subject)
        var commonName: String?
        while !names.isAtEnd {
            guard let relativeName = names.read(tag: set) else { return nil }
            var attributes = DERReader(relativeName)
            while !attributes.isAtEnd {
                guard let attribute = attributes.read(tag: sequence) else { return nil }
                var parts = DERReader(attribute)
                guard let type = parts.read(tag: objectIdentifier), let valueTag = parts.peekTag,
                    let value = parts.read()
                else { return nil }
                guard type.elementsEqual(commonNameOID) else { continue }
                guard stringTags.contains(valueTag), let text = String(validating: value, as: UTF8.self) else {
                    return nil
                }
                commonName = text
            }
        }
        return commonName
    }

    private static let sequence: UInt8 = 0x30
    private static let set: UInt8 = 0x31
    private static let objectIdentifier: UInt8 = 0x06
    /// `[0] EXPLICIT Version`.
    private static let versionTag: UInt8 = 0xA0
    /// 2.5.4.3, id-at-commonName.
    private static let commonNameOID: [UInt8] = [0x55, 0x04, 0x03]
    /// UTF8String, PrintableString, IA5String.
    private static let stringTags: Set<UInt8> = [0x0C, 0x13, 0x16]
}

/// Reads DER elements one after the other from a slice: tag, length (definite, up to four bytes), contents.
private struct DERReader {
    private var bytes: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }

    var isAtEnd: Bool { bytes.isEmpty }
    var peekTag: UInt8? { bytes.first }

    /// The contents of the next element, if it has `tag` (any tag when `nil`) and fits what is left.
    mutating func read(tag expected: UInt8? = nil) -> ArraySlice<UInt8>? {
        var rest = bytes
        guard let tag = rest.popFirst(), expected == nil || tag == expected, tag & 0x1F != 0x1F,
            let first = rest.popFirst()
        else { return nil }
        var length = Int(first)
        if first & 0x80 != 0 {
            let count = Int(first & 0x7F)
            // 0x80 is BER's indefinite length, which DER does not allow.
            guard (1...4).contains(count), rest.count >= count else { return nil }
            length = rest.prefix(count).reduce(0) { $0 << 8 | Int($1) }
            rest = rest.dropFirst(count)
        }
        guard length <= rest.count else { return nil }
        bytes = rest.dropFirst(length)
        return rest.prefix(length)
    }
}
