import ReplicationCore

/// Any line a peer sends is either refused with an `ERROR` that stays one line, or parsed into a command
/// whose encoding parses back to the same command.
func checkCodec(_ data: UnsafeRawBufferPointer) {
    guard let line = String(validating: data, as: UTF8.self), !line.utf8.contains(UInt8(ascii: "\n")) else { return }
    let (word, rest) = CommandCodec.split(line[...])
    guard let name = CommandName(rawValue: String(word)) else { return }
    switch CommandCodec.parse(name, rest: rest) {
    case .failure(let error):
        let text = error.errorText
        check(!text.utf8.contains(UInt8(ascii: "\n")), "an ERROR text holds a newline: \(text.debugDescription)")
    case .success(let command):
        check(command.name == name, "\(name) parsed as \(command.name)")
        let encoded = CommandCodec.encode(command)
        let (againWord, againRest) = CommandCodec.split(encoded[...])
        check(againWord == name.rawValue, "\(name) encoded as \(encoded.debugDescription)")
        let reparsed = CommandCodec.parse(name, rest: againRest)
        check(reparsed == .success(command), "\(encoded.debugDescription) parses as \(reparsed), not \(command)")
    }
}
