import NIOCore
import RedisClient

/// The RESP reader, fed the input whole and then in pieces of 1 to 16 bytes, yields the same replies and
/// fails at the same point; every reply, written back as RESP, reads as itself; and the replies never hold
/// more string bytes than were received (a declared length is not trusted beyond the bytes that came).
func checkRESP(_ data: UnsafeRawBufferPointer) {
    let whole = readReplies(data, pieceSeed: nil)
    let pieces = readReplies(data, pieceSeed: UInt64(data.count) | 1)
    check(whole.replies == pieces.replies, "whole: \(whole.replies), in pieces: \(pieces.replies)")
    check(whole.failed == pieces.failed, "whole failed: \(whole.failed), in pieces: \(pieces.failed)")
    let received = whole.replies.reduce(0) { $0 + stringBytes($1) }
    check(received <= data.count, "\(received) string bytes read out of \(data.count) received")
    for reply in whole.replies {
        let again = encoded(reply).withUnsafeBytes { readReplies($0, pieceSeed: nil) }
        check(again.replies == [reply] && !again.failed, "\(reply) written back reads as \(again)")
    }
}

private func readReplies(_ data: UnsafeRawBufferPointer, pieceSeed: UInt64?) -> (replies: [RedisValue], failed: Bool) {
    let reader = RESPReader()
    var replies: [RedisValue] = []
    var seed = pieceSeed ?? 0
    var offset = 0
    do throws(RedisError) {
        while offset < data.count {
            var end = data.count
            if pieceSeed != nil {
                // A xorshift step: reads of any size could arrive.
                seed ^= seed << 13
                seed ^= seed >> 7
                seed ^= seed << 17
                end = min(data.count, offset + 1 + Int(seed % 16))
            }
            try reader.feed(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: data[offset..<end])))
            offset = end
            while let reply = try reader.next() { replies.append(reply) }
        }
    } catch {
        return (replies, true)
    }
    return (replies, false)
}

/// Bytes of bulk strings; scalars of status and error texts, where each invalid UTF-8 byte became one U+FFFD.
private func stringBytes(_ value: RedisValue) -> Int {
    switch value {
    case .simpleString(let text), .error(let text): text.unicodeScalars.count
    case .bulkString(let bytes): bytes.readableBytes
    case .array(let elements): elements.reduce(0) { $0 + stringBytes($1) }
    case .integer, .null: 0
    }
}

/// RESP2 as a Redis server writes it.
private func encoded(_ value: RedisValue) -> [UInt8] {
    switch value {
    case .simpleString(let text): Array("+\(text)\r\n".utf8)
    case .error(let text): Array("-\(text)\r\n".utf8)
    case .integer(let number): Array(":\(number)\r\n".utf8)
    case .bulkString(let bytes):
        Array("$\(bytes.readableBytes)\r\n".utf8) + Array(bytes.readableBytesView) + Array("\r\n".utf8)
    case .null: Array("$-1\r\n".utf8)
    case .array(let elements): Array("*\(elements.count)\r\n".utf8) + elements.flatMap(encoded)
    }
}
