/// Python's `repr()` of a string, because Synapse's error texts embed it and peers may compare them.
///
/// Python picks single quotes unless the text contains a single quote and no double quote.
func pythonRepr(_ text: some StringProtocol) -> String {
    let quote: Character = text.contains("'") && !text.contains("\"") ? "\"" : "'"
    var result = String(quote)
    result.reserveCapacity(text.utf8.count + 2)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where Character(scalar) == quote: result += "\\" + String(quote)
        case _ where scalar.value < 0x20 || scalar.value == 0x7F:
            result += "\\x" + hex(scalar.value, width: 2)
        default: result.unicodeScalars.append(scalar)
        }
    }
    result.append(quote)
    return result
}

/// `repr()` of a Python exception raised with one message argument, e.g. `ValueError('…')`.
func pythonExceptionRepr(_ type: String, _ arguments: String...) -> String {
    "\(type)(\(arguments.map(pythonRepr).joined(separator: ", ")))"
}

func hex(_ value: UInt32, width: Int) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
}
