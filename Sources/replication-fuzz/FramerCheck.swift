import NIOCore
import ReplicationNIO

/// The framer, fed the input in pieces, yields exactly the frames of a plain split at `\n`: lines of at
/// most the limit with one trailing `\r` removed, and `.tooLong` once (then nothing) for the first
/// longer line, or for a longer unterminated rest.
///
/// Byte 0 picks the limit (small, so that long lines are common) and byte 1 seeds the piece sizes.
func checkFramer(_ data: UnsafeRawBufferPointer) {
    guard data.count >= 2 else { return }
    let maxLineLength = Int(data[0] % 64)
    var pieceSeed = UInt64(data[1]) | 1
    let input = data[2...]

    var framer = LineFramer(maxLineLength: maxLineLength)
    var buffer = ByteBufferAllocator().buffer(capacity: input.count)
    var frames: [InboundFrame] = []
    var offset = input.startIndex
    while offset < input.endIndex {
        // A xorshift step: piece sizes of 1 to 16 bytes, as reads of any size could arrive.
        pieceSeed ^= pieceSeed << 13
        pieceSeed ^= pieceSeed >> 7
        pieceSeed ^= pieceSeed << 17
        let end = min(input.endIndex, offset + 1 + Int(pieceSeed % 16))
        buffer.writeBytes(UnsafeRawBufferPointer(rebasing: data[offset..<end]))
        offset = end
        while let frame = framer.nextFrame(&buffer) { frames.append(frame) }
        buffer.discardReadBytes()
    }

    let expected = referenceFrames(Array(input), maxLineLength: maxLineLength)
    check(frames == expected, "framer gave \(frames.count) frames, the split gives \(expected.count)")
}

private func referenceFrames(_ input: [UInt8], maxLineLength: Int) -> [InboundFrame] {
    var frames: [InboundFrame] = []
    var start = 0
    while let newline = input[start...].firstIndex(of: UInt8(ascii: "\n")) {
        guard newline - start <= maxLineLength else { return frames + [.tooLong] }
        var line = input[start..<newline]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        frames.append(.line(ByteBuffer(bytes: line)))
        start = newline + 1
    }
    return input.count - start > maxLineLength ? frames + [.tooLong] : frames
}
