import Credentials

/// The common name read from any bytes at all is either none or bytes that are there, after the
/// certificate's subject, never beyond the input (AddressSanitizer sees any read past it).
func checkCertificate(_ data: UnsafeRawBufferPointer) {
    let bytes = Array(data)
    guard let name = CertificateSubject.commonName(der: bytes) else { return }
    let needle = Array(name.utf8)
    let found =
        needle.count <= bytes.count
        && (0...(bytes.count - needle.count)).contains { bytes[$0..<($0 + needle.count)].elementsEqual(needle) }
    check(found, "common name \(name.debugDescription) is not in the input")
}
