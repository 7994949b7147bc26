/// JSON as Synapse 1.6 wrote it: `", "` between array items and ASCII-only strings (`\uXXXX`).
public enum JSONText {
    /// A JSON string literal for `text`.
    public static func string(_ text: String) -> String {
        var result = "\""
        result.reserveCapacity(text.utf8.count + 2)
        for unit in text.utf16 {
            switch unit {
            case 0x22: result += "\\\""
            case 0x5C: result += "\\\\"
            case 0x0A: result += "\\n"
            case 0x0D: result += "\\r"
            case 0x09: result += "\\t"
            case 0x08: result += "\\b"
            case 0x0C: result += "\\f"
            case 0x20..<0x7F: result.unicodeScalars.append(Unicode.Scalar(UInt8(unit)))
            default: result += "\\u" + hex(UInt32(unit), width: 4)
            }
        }
        result += "\""
        return result
    }

    /// A JSON array of already-encoded values.
    public static func array(_ encodedValues: [String]) -> String {
        "[" + encodedValues.joined(separator: ", ") + "]"
    }
}
