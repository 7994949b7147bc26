import Testing

@testable import ReplicationCore

@Suite struct JSONScannerTests {
    func scan(_ text: String) -> Result<JSONScanner.TopLevel, JSONScanner.SyntaxError> {
        Result { () throws(JSONScanner.SyntaxError) in try JSONScanner.scan(text[...]) }
    }

    @Test(arguments: [
        (#"["ev", ["$1", "!r", "m", null, null, null]]"#, JSONScanner.TopLevel.array(count: 2)),
        ("[]", .array(count: 0)),
        (" [ 1 , -2.5e+3 , {\"a\": [1, {}]}, \"x\\u00e9\\n\" ] ", .array(count: 4)),
        (#"{"a": 1}"#, .other),
        ("\"text\"", .other),
        ("NaN", .other),
        ("[true, false, null, -Infinity]", .array(count: 4)),
        ("[[[[[]]]]]", .array(count: 1)),
    ])
    func acceptsValidJSON(text: String, expected: JSONScanner.TopLevel) {
        #expect(scan(text) == .success(expected))
    }

    @Test(arguments: [
        (#"["@a:test.local""#, "Expecting ',' delimiter or ']': line 1 column 17 (char 16)"),
        ("", "Expecting value: line 1 column 1 (char 0)"),
        ("[1,]", "Expecting value: line 1 column 4 (char 3)"),
        ("[1] x", "Extra data: line 1 column 5 - line 1 column 6 (char 4 - 5)"),
        (#"{"a" 1}"#, "Expecting ':' delimiter: line 1 column 6 (char 5)"),
        ("{1: 2}", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (#"{"a": 1 "b": 2}"#, "Expecting ',' delimiter or '}': line 1 column 9 (char 8)"),
        (#"["é", x]"#, "Expecting value: line 1 column 7 (char 6)"),
        (#"["abc"#, "Unterminated string starting at: line 1 column 2 (char 1)"),
        ("[01]", "Expecting ',' delimiter or ']': line 1 column 3 (char 2)"),
        ("[-]", "Expecting value: line 1 column 2 (char 1)"),
        (#"["\q"]"#, "Invalid \\X escape sequence: line 1 column 3 (char 2)"),
    ])
    func rejectsInvalidJSONWithPythonMessages(text: String, message: String) {
        guard case .failure(let error) = scan(text) else {
            Issue.record("accepted \(text)")
            return
        }
        #expect(error.pythonMessage == message)
    }

    @Test func deepNestingDoesNotOverflowTheStack() {
        let depth = 100_000
        let text = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        #expect(scan(text) == .success(.array(count: 1)))
    }

    @Test func mixedNestingIsCheckedPastSixtyFourLevels() {
        // Alternating arrays and objects, 130 deep: every closer must match its opener.
        var opening = ""
        var closing: [Character] = []
        for level in 0..<130 {
            opening += level.isMultiple(of: 2) ? "[" : #"{"k":"#
            closing.insert(level.isMultiple(of: 2) ? "]" : "}", at: 0)
        }
        #expect(scan(opening + "1" + String(closing)) == .success(.array(count: 1)))
        for position in [0, 63, 64, 65, 66, 129] {
            var wrong = closing
            wrong[position] = wrong[position] == "]" ? "}" : "]"
            guard case .failure = scan(opening + "1" + String(wrong)) else {
                Issue.record("accepted a wrong closer \(position) levels out")
                continue
            }
        }
    }
}
