import ReplicationCore

/// A valid text is also valid twice over as the elements of an array, and an error points inside the text.
func checkJSON(_ data: UnsafeRawBufferPointer) {
    guard let text = String(validating: data, as: UTF8.self) else { return }
    do throws(JSONScanner.SyntaxError) {
        _ = try JSONScanner.scan(text[...])
        let pair = try? JSONScanner.scan("[\(text),\(text)]"[...])
        check(pair == .array(count: 2), "\(text.debugDescription) is valid but [it,it] scans as \(String(describing: pair))")
    } catch {
        let length = text.unicodeScalars.count
        check((0...length).contains(error.position), "error at \(error.position) in a text of \(length) scalars")
        if let end = error.end { check(end >= error.position && end <= length, "error ends at \(end) of \(length)") }
    }
}
