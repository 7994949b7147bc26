#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

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
        guard line.count > Self.prefix.count, let base = line.baseAddress,
            memcmp(base, Self.prefix, Self.prefix.count) == 0,
            let nameEnd = Self.space(in: line, from: Self.prefix.count),
            let stream = StreamName(utf8: UnsafeRawBufferPointer(rebasing: line[Self.prefix.count..<nameEnd])),
            let tokenEnd = Self.space(in: line, from: nameEnd + 1),
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
    private static let batch = Array("batch".utf8)

    /// The offset of the first space in `line` at or after `start`.
    private static func space(in line: UnsafeRawBufferPointer, from start: Int) -> Int? {
        start < line.count ? line.firstIndex(of: UInt8(ascii: " "), in: start..<line.count) : nil
    }

    /// `batch`, or 1 to 18 digits without a leading zero (`0` itself aside): exactly what Python's `int()`
    /// reads as the same number, and never more than `Int64` holds.
    private static func token(_ bytes: UnsafeRawBufferPointer) -> RowToken? {
        guard (1...18).contains(bytes.count), let base = bytes.baseAddress else { return nil }
        if bytes.count == batch.count, memcmp(base, batch, batch.count) == 0 { return .batch }
        guard bytes.count == 1 || bytes[0] != UInt8(ascii: "0") else { return nil }
        var value: Int64 = 0
        for byte in bytes {
            let digit = byte &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            value = value * 10 + Int64(digit)
        }
        return .value(value)
    }
}

extension StreamName {
    /// The stream with this wire name given as UTF-8 bytes, without building a String.
    public init?(utf8 name: UnsafeRawBufferPointer) {
        guard let start = name.baseAddress,
            let index = Self.utf8Names.firstIndex(where: {
                $0.count == name.count && memcmp($0, start, name.count) == 0
            })
        else { return nil }
        self = Self.all[index]
    }

    private static let utf8Names = all.map { Array($0.rawValue.utf8) }
}

/// Whether `bytes` are UTF-8; ASCII, the common case, is checked four words at a time.
func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
    let highs: UInt64 = 0x8080_8080_8080_8080
    var offset = 0
    while offset + 32 <= bytes.count {
        let words =
            bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            | bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)
            | bytes.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self)
            | bytes.loadUnaligned(fromByteOffset: offset + 24, as: UInt64.self)
        guard words & highs == 0 else { break }
        offset += 32
    }
    while offset + 8 <= bytes.count, bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self) & highs == 0 {
        offset += 8
    }
    while offset < bytes.count, bytes[offset] < 0x80 { offset += 1 }
    if offset == bytes.count { return true }
    return String(validating: bytes, as: UTF8.self) != nil
}
