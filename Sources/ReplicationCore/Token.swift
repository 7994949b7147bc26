/// The token of an `RDATA` line: a stream position, or `batch` for a row that belongs to the batch
/// closed by the next row with a numeric token on the same stream.
public enum RowToken: Hashable, Sendable {
    case value(Int64)
    case batch
}

/// Where a `REPLICATE` asks to start: strictly after a token, or at the stream's current position.
public enum ReplicateFrom: Hashable, Sendable {
    case token(Int64)
    case now
}

/// Integer parsing with the rules of Python's `int()`, because the error texts peers see are Synapse's.
enum PythonInt {
    enum Overflow { case clamp, fail }

    /// Parses like `int(text)`; `nil` when Python would raise `ValueError`.
    /// Out-of-range values are clamped to `Int64` when `overflow` is `.clamp` (a huge token is simply "ahead").
    static func parse(_ text: Substring, overflow: Overflow = .fail) -> Int64? {
        var bytes = text.utf8[...]
        while let first = bytes.first, isSpace(first) { bytes = bytes.dropFirst() }
        while let last = bytes.last, isSpace(last) { bytes = bytes.dropLast() }
        var negative = false
        if let sign = bytes.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") {
            negative = sign == UInt8(ascii: "-")
            bytes = bytes.dropFirst()
        }
        guard !bytes.isEmpty else { return nil }
        var magnitude: UInt64 = 0
        var overflowed = false
        var previousWasDigit = false
        for byte in bytes {
            if byte == UInt8(ascii: "_") {
                // Python allows single underscores between digits.
                guard previousWasDigit else { return nil }
                previousWasDigit = false
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            previousWasDigit = true
            let (times10, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
            if o1 || o2 { overflowed = true } else { magnitude = sum }
        }
        guard previousWasDigit else { return nil }
        let limit: UInt64 = negative ? UInt64(Int64.max) + 1 : UInt64(Int64.max)
        if overflowed || magnitude > limit {
            guard overflow == .clamp else { return nil }
            return negative ? Int64.min : Int64.max
        }
        return negative ? Int64(truncatingIfNeeded: 0 &- magnitude) : Int64(magnitude)
    }

    private static func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || (byte >= 0x09 && byte <= 0x0D)
    }
}

/// Characters in the decimal form of `value`, its sign included, without building the String.
public func decimalWidth(_ value: Int64) -> Int {
    var width = value < 0 ? 2 : 1
    var rest = value.magnitude
    while rest >= 10 {
        rest /= 10
        width += 1
    }
    return width
}
