/// A validating structural scan of one JSON document: no tree is built.
///
/// Rows are opaque to the server; it only needs to know that a text is valid JSON and, for an array, how many
/// elements it has. Errors carry the messages of `simplejson` (which Synapse 1.6 parsed with), so that the
/// `ERROR` text a peer sees matches what Synapse would have sent.
public enum JSONScanner {
    /// What the top level of a valid document is.
    public enum TopLevel: Equatable, Sendable {
        case array(count: Int)
        case other
    }

    /// A syntax error, positioned in characters (Unicode scalars) as Python reports it.
    public struct SyntaxError: Error, Equatable, Sendable {
        public var message: String
        public var position: Int
        public var end: Int?

        /// The text of Python's `JSONDecodeError`, e.g. `Expecting value: line 1 column 1 (char 0)`.
        public var pythonMessage: String {
            if let end {
                return "\(message): line 1 column \(position + 1) - line 1 column \(end + 1) (char \(position) - \(end))"
            }
            return "\(message): line 1 column \(position + 1) (char \(position))"
        }
    }

    public static func scan(_ text: Substring) throws(SyntaxError) -> TopLevel {
        if let result = text.utf8.withContiguousStorageIfAvailable({ buffer in
            Result { () throws(SyntaxError) -> TopLevel in try scan(bytes: buffer) }
        }) {
            return try result.get()
        }
        let copy = Array(text.utf8)
        return try copy.withUnsafeBufferPointer { buffer throws(SyntaxError) in try scan(bytes: buffer) }
    }

    private enum Container { case array, object }

    /// The open containers: the first 64 levels in the bits of one word, deeper ones in an array, so that
    /// a row (rarely more than a few levels deep) is scanned without allocating.
    private struct ContainerStack {
        private var bits: UInt64 = 0
        private var deeper: [Container] = []
        private(set) var count = 0

        var isEmpty: Bool { count == 0 }

        var last: Container? {
            guard count > 0 else { return nil }
            if count > 64 { return deeper.last }
            return bits & (1 << UInt64(count - 1)) != 0 ? .object : .array
        }

        mutating func append(_ container: Container) {
            if count >= 64 {
                deeper.append(container)
            } else if container == .object {
                bits |= 1 << UInt64(count)
            } else {
                bits &= ~(1 << UInt64(count))
            }
            count += 1
        }

        mutating func removeLast() {
            if count > 64 { deeper.removeLast() }
            count -= 1
        }
    }

    // The scanner is iterative with an explicit stack, so deep nesting cannot overflow the thread's stack.
    static func scan(bytes: UnsafeBufferPointer<UInt8>) throws(SyntaxError) -> TopLevel {
        var cursor = Cursor(bytes: bytes)
        var stack = ContainerStack()
        var topLevelCount = 0
        var topIsArray = false

        cursor.skipWhitespace()
        // Each iteration parses one value, then walks out through closing brackets and delimiters.
        parseValue: while true {
            guard let byte = cursor.peek() else { throw cursor.error("Expecting value") }
            if stack.count == 1, topIsArray { topLevelCount += 1 }
            switch byte {
            case UInt8(ascii: "["):
                if stack.isEmpty { topIsArray = true }
                cursor.advance()
                cursor.skipWhitespace()
                if cursor.peek() == UInt8(ascii: "]") {
                    cursor.advance()
                } else {
                    stack.append(.array)
                    continue parseValue
                }
            case UInt8(ascii: "{"):
                cursor.advance()
                cursor.skipWhitespace()
                if cursor.peek() == UInt8(ascii: "}") {
                    cursor.advance()
                } else {
                    stack.append(.object)
                    try cursor.objectKey()
                    continue parseValue
                }
            case UInt8(ascii: "\""):
                try cursor.string()
            default:
                try cursor.scalar()
            }
            // A value is complete: close containers or find the next element.
            while true {
                cursor.skipWhitespace()
                guard let container = stack.last else { break parseValue }
                let closer = container == .array ? UInt8(ascii: "]") : UInt8(ascii: "}")
                switch cursor.peek() {
                case closer:
                    cursor.advance()
                    stack.removeLast()
                case UInt8(ascii: ","):
                    cursor.advance()
                    cursor.skipWhitespace()
                    if container == .object { try cursor.objectKey() }
                    continue parseValue
                default:
                    throw cursor.error(container == .array ? "Expecting ',' delimiter or ']'" : "Expecting ',' delimiter or '}'")
                }
            }
        }
        if cursor.offset != bytes.count {
            throw SyntaxError(
                message: "Extra data", position: cursor.characterIndex(cursor.offset),
                end: cursor.characterIndex(bytes.count))
        }
        return topIsArray ? .array(count: topLevelCount) : .other
    }

    private struct Cursor {
        let bytes: UnsafeBufferPointer<UInt8>
        var offset = 0

        func peek() -> UInt8? { offset < bytes.count ? bytes[offset] : nil }
        mutating func advance() { offset += 1 }

        mutating func skipWhitespace() {
            while offset < bytes.count {
                switch bytes[offset] {
                case 0x20, 0x09, 0x0A, 0x0D: offset += 1
                default: return
                }
            }
        }

        func characterIndex(_ byteOffset: Int) -> Int {
            var count = 0
            for index in 0..<byteOffset where bytes[index] & 0xC0 != 0x80 { count += 1 }
            return count
        }

        func error(_ message: String, at byteOffset: Int? = nil) -> SyntaxError {
            SyntaxError(message: message, position: characterIndex(byteOffset ?? offset))
        }

        /// Parses `"key" :` with whitespace; the value follows.
        mutating func objectKey() throws(SyntaxError) {
            guard peek() == UInt8(ascii: "\"") else {
                throw error("Expecting property name enclosed in double quotes")
            }
            try string()
            skipWhitespace()
            guard peek() == UInt8(ascii: ":") else { throw error("Expecting ':' delimiter") }
            advance()
            skipWhitespace()
        }

        mutating func string() throws(SyntaxError) {
            let start = offset
            advance()
            while true {
                skipPlainStringBytes()
                guard let byte = peek() else { break }
                switch byte {
                case UInt8(ascii: "\""):
                    advance()
                    return
                case UInt8(ascii: "\\"):
                    advance()
                    guard let escape = peek() else { break }
                    switch escape {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                        UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                        advance()
                    case UInt8(ascii: "u"):
                        let escapeStart = offset - 1
                        advance()
                        for _ in 0..<4 {
                            guard let digit = peek(), isHexDigit(digit) else {
                                throw error("Invalid \\uXXXX escape sequence", at: escapeStart)
                            }
                            advance()
                        }
                    default:
                        throw error("Invalid \\X escape sequence", at: offset - 1)
                    }
                case 0x00..<0x20:
                    throw error("Invalid control character at", at: offset)
                default:
                    advance()
                }
            }
            throw error("Unterminated string starting at", at: start)
        }

        /// Moves past bytes that are neither a string's end, an escape nor a control character: most of
        /// a string. Eight at a time (the usual bit tricks: a byte equal to `"` or `\\` leaves a zero byte
        /// after the xor, a byte below 0x20 borrows); the lowest flagged byte of a word is always a true
        /// one (a borrow only flags bytes above it), so the stop is found without going back byte by byte.
        private mutating func skipPlainStringBytes() {
            let ones: UInt64 = 0x0101_0101_0101_0101
            let highs: UInt64 = 0x8080_8080_8080_8080
            func zeroBytes(_ word: UInt64) -> UInt64 { (word &- ones) & ~word & highs }
            if let base = bytes.baseAddress {
                while offset + 8 <= bytes.count {
                    let word = UInt64(littleEndian: UnsafeRawPointer(base + offset).loadUnaligned(as: UInt64.self))
                    let stops =
                        ((word &- ones &* 0x20) & ~word & highs) | zeroBytes(word ^ (ones &* 0x22))
                        | zeroBytes(word ^ (ones &* 0x5C))
                    if stops != 0 {
                        offset += stops.trailingZeroBitCount / 8
                        return
                    }
                    offset += 8
                }
            }
            while offset < bytes.count {
                let byte = bytes[offset]
                guard byte >= 0x20, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\") else { return }
                offset += 1
            }
        }

        /// Numbers, `true`/`false`/`null`, and the `NaN`/`Infinity` that Python's parsers accept.
        mutating func scalar() throws(SyntaxError) {
            // Only the literal that starts with this byte can match.
            if let first = peek(), let literal = Self.literal(startingWith: first), matches(literal) {
                offset += literal.utf8CodeUnitCount
                return
            }
            let start = offset
            if peek() == UInt8(ascii: "-") { advance() }
            guard let first = peek(), isDigit(first) else { throw error("Expecting value", at: start) }
            advance()
            if first != UInt8(ascii: "0") { skipDigits() }
            if peek() == UInt8(ascii: "."), offset + 1 < bytes.count, isDigit(bytes[offset + 1]) {
                advance()
                skipDigits()
            }
            if let e = peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
                var probe = offset + 1
                if probe < bytes.count, bytes[probe] == UInt8(ascii: "+") || bytes[probe] == UInt8(ascii: "-") {
                    probe += 1
                }
                if probe < bytes.count, isDigit(bytes[probe]) {
                    offset = probe
                    skipDigits()
                }
            }
        }

        private static func literal(startingWith byte: UInt8) -> StaticString? {
            switch byte {
            case UInt8(ascii: "t"): "true"
            case UInt8(ascii: "f"): "false"
            case UInt8(ascii: "n"): "null"
            case UInt8(ascii: "N"): "NaN"
            case UInt8(ascii: "I"): "Infinity"
            case UInt8(ascii: "-"): "-Infinity"
            default: nil
            }
        }

        /// Compared four bytes at a time, the rest (`NaN`, the end of `false` and `-Infinity`) byte by byte.
        private func matches(_ literal: StaticString) -> Bool {
            let count = literal.utf8CodeUnitCount
            guard bytes.count - offset >= count, let base = bytes.baseAddress else { return false }
            let text = UnsafeRawPointer(base + offset)
            let expected = UnsafeRawPointer(literal.utf8Start)
            var at = 0
            while at + 4 <= count {
                let want = expected.loadUnaligned(fromByteOffset: at, as: UInt32.self)
                guard text.loadUnaligned(fromByteOffset: at, as: UInt32.self) == want else { return false }
                at += 4
            }
            while at < count {
                let want = expected.load(fromByteOffset: at, as: UInt8.self)
                guard text.load(fromByteOffset: at, as: UInt8.self) == want else { return false }
                at += 1
            }
            return true
        }

        private mutating func skipDigits() {
            while let byte = peek(), isDigit(byte) { advance() }
        }
        private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
        private func isHexDigit(_ byte: UInt8) -> Bool {
            isDigit(byte) || (byte | 0x20 >= UInt8(ascii: "a") && byte | 0x20 <= UInt8(ascii: "f"))
        }
    }
}
