/// A writer's `RDATA <stream> <token|batch> <row>` line in its common form, recognised on its bytes.
///
/// A writer streams hundreds of thousands of these, so they skip the general path (a String per line, a
/// ``Command``, a String per argument). Only lines the general path would accept unchanged are recognised:
/// a stream this server publishes, a token of plain digits (no sign, underscore, space or leading zero) or
/// `batch`, and a row that is UTF-8 and a JSON array with the stream's field count. Anything else is left
/// to the general path, which answers it with the exact error.
public struct WriterRowLine: Equatable, Sendable {
    public var stream: StreamName
    public var token: RowToken
    /// Where the row's JSON starts in the line.
    public var rowOffset: Int

    public init?(_ line: UnsafeRawBufferPointer) {
        let prefix = Self.prefix
        guard line.count > prefix.count, line.starts(with: prefix) else { return nil }
        guard let nameEnd = line[prefix.count...].firstIndex(of: Self.space),
            let stream = StreamName(utf8: UnsafeRawBufferPointer(rebasing: line[prefix.count..<nameEnd])),
            let tokenEnd = line[(nameEnd + 1)...].firstIndex(of: Self.space),
            let token = Self.token(UnsafeRawBufferPointer(rebasing: line[(nameEnd + 1)..<tokenEnd]))
        else { return nil }
        let row = UnsafeRawBufferPointer(rebasing: line[(tokenEnd + 1)...])
        guard isValidUTF8(row),
            (try? JSONScanner.scan(bytes: row.assumingMemoryBound(to: UInt8.self))) == .array(count: stream.fieldCount)
        else { return nil }
        self.stream = stream
        self.token = token
        self.rowOffset = tokenEnd + 1
    }

    private static let prefix = Array("RDATA ".utf8)
    private static let space = UInt8(ascii: " ")
    private static let batch = Array("batch".utf8)

    /// `batch`, or 1 to 18 digits without a leading zero (`0` itself aside): exactly what Python's `int()`
    /// reads as the same number, and never more than `Int64` holds.
    private static func token(_ bytes: UnsafeRawBufferPointer) -> RowToken? {
        if bytes.elementsEqual(batch) { return .batch }
        guard (1...18).contains(bytes.count), bytes.count == 1 || bytes[0] != UInt8(ascii: "0") else { return nil }
        var value: Int64 = 0
        for byte in bytes {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int64(byte - UInt8(ascii: "0"))
        }
        return .value(value)
    }
}

extension StreamName {
    /// The stream with this wire name given as UTF-8 bytes, without building a String.
    public init?(utf8 name: UnsafeRawBufferPointer) {
        guard let index = Self.utf8Names.firstIndex(where: { $0.elementsEqual(name) }) else { return nil }
        self = Self.all[index]
    }

    private static let utf8Names = all.map { Array($0.rawValue.utf8) }
}

/// Whether `bytes` are UTF-8; ASCII, the common case, is checked a word at a time.
func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
    var offset = 0
    let words = bytes.count / 8
    while offset < words * 8 {
        guard bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 else { break }
        offset += 8
    }
    while offset < bytes.count, bytes[offset] < 0x80 { offset += 1 }
    if offset == bytes.count { return true }
    return String(validating: bytes, as: UTF8.self) != nil
}
