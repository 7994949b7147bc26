import ReplicationCore

/// A line the writer fast path recognises is one the general path parses to the same stream, token and row.
func checkWriterRow(_ data: UnsafeRawBufferPointer) {
    guard let fast = WriterRowLine(data) else { return }
    guard let line = String(validating: data, as: UTF8.self) else {
        return check(false, "the fast path took a line that is not UTF-8")
    }
    let (word, rest) = CommandCodec.split(line[...])
    check(word == "RDATA", "the fast path took a \(word.debugDescription) line")
    let row = String(decoding: UnsafeRawBufferPointer(rebasing: data[fast.rowOffset...]), as: UTF8.self)
    let expected = Command.rdata(
        stream: fast.stream.rawValue, token: fast.token, row: RowJSON(text: row, shape: .array(count: fast.stream.fieldCount)))
    let general = CommandCodec.parse(.RDATA, rest: rest)
    check(general == .success(expected), "fast path \(fast) but the general path gives \(general)")
}
