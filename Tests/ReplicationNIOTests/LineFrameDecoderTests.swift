import NIOCore
import NIOEmbedded
import NIOTestUtils
import ReplicationCore
import Testing

@testable import ReplicationNIO

@Suite struct LineFrameDecoderTests {
    func frame(_ text: String) -> InboundFrame { .line(ByteBuffer(string: text)) }

    @Test func splitsLinesStripsCarriageReturnsWhateverTheChunking() throws {
        let input = "NAME w\r\nPING 1\n\nREPLICATE ALL NOW\n"
        try ByteToMessageDecoderVerifier.verifyDecoder(
            stringInputOutputPairs: [(input, [frame("NAME w"), frame("PING 1"), frame(""), frame("REPLICATE ALL NOW")])],
            decoderFactory: { LineFrameDecoder(maxLineLength: 16384) })
    }

    @Test func oneByteAtATime() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(LineFrameDecoder(maxLineLength: 16384)))
        for byte in "PING 1\nNAME x\n".utf8 { try channel.writeInbound(ByteBuffer(bytes: [byte])) }
        #expect(try channel.readInbound(as: InboundFrame.self) == frame("PING 1"))
        #expect(try channel.readInbound(as: InboundFrame.self) == frame("NAME x"))
        #expect(try channel.readInbound(as: InboundFrame.self) == nil)
    }

    @Test func aLineOfExactlyTheLimitPassesOneByteMoreDoesNot() throws {
        var decoder = LineFrameDecoder(maxLineLength: 16384)
        var fits = ByteBuffer(string: String(repeating: "a", count: 16384) + "\n")
        #expect(decoder.nextFrame(&fits) == frame(String(repeating: "a", count: 16384)))

        var decoder2 = LineFrameDecoder(maxLineLength: 16384)
        var tooLong = ByteBuffer(string: String(repeating: "a", count: 16385) + "\nPING 1\n")
        #expect(decoder2.nextFrame(&tooLong) == .tooLong)
        // Everything after an overlong line is discarded: the connection is closing.
        #expect(decoder2.nextFrame(&tooLong) == nil)
    }

    @Test func anUnterminatedBufferPastTheLimitIsTooLongBeforeItsNewlineArrives() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(LineFrameDecoder(maxLineLength: 16384)))
        try channel.writeInbound(ByteBuffer(string: String(repeating: "b", count: 16384)))
        #expect(try channel.readInbound(as: InboundFrame.self) == nil)
        try channel.writeInbound(ByteBuffer(string: "b"))
        #expect(try channel.readInbound(as: InboundFrame.self) == .tooLong)
    }

    @Test func linesTakenInPlaceStopAtTheFirstLeftAndLeaveTheRestToTheFramer() throws {
        var framer = LineFramer(maxLineLength: 8)
        var buffer = ByteBuffer(string: "a\nbb\nskip\nc\n")
        var seen: [String] = []
        framer.takeLines(&buffer) { line in
            let text = String(decoding: line, as: UTF8.self)
            seen.append(text)
            return text == "skip" ? .left : .taken
        }
        #expect(seen == ["a", "bb", "skip"])
        #expect(framer.nextFrame(&buffer) == .line(ByteBuffer(string: "skip")))

        // The last taken line ends the pass; a `\r` line, an overlong one and a partial one are the framer's.
        seen = []
        framer.takeLines(&buffer) {
            seen.append(String(decoding: $0, as: UTF8.self))
            return .takenLast
        }
        #expect(seen == ["c"])
        for (input, frame) in [("x\r\n", frame("x")), ("123456789\n", .tooLong)] {
            var framer = LineFramer(maxLineLength: 8)
            var buffer = ByteBuffer(string: input)
            framer.takeLines(&buffer) { _ in .taken }
            #expect(buffer.readableBytes == input.utf8.count)
            #expect(framer.nextFrame(&buffer) == frame)
        }
        var partial = ByteBuffer(string: "ok\npart")
        framer.takeLines(&partial) { _ in .taken }
        #expect(partial.readableBytes == 4)
        #expect(framer.nextFrame(&partial) == nil)
    }

    @Test func carriageReturnCountsTowardsTheLimit() throws {
        var decoder = LineFrameDecoder(maxLineLength: 4)
        var buffer = ByteBuffer(string: "abcd\r\n")
        #expect(decoder.nextFrame(&buffer) == .tooLong)
    }
}

@Suite struct DecimalWritingTests {
    @Test func acknowledgementsAreOnePositionLinePerStreamPosition() {
        var buffer = ByteBuffer(string: "x")
        let positions = [StreamPosition(.events, 7), StreamPosition(.typing, -1), StreamPosition(.events, Int64.max)]
        buffer.writePositions(positions)
        #expect(
            buffer.readString(length: buffer.readableBytes)
                == "xPOSITION events 7\nPOSITION typing -1\nPOSITION events \(Int64.max)\n")
    }

    @Test(arguments: [0, 7, 10, 99, 12_345, -1, -90, Int64.max, Int64.min])
    func writesWhatStringWould(value: Int64) {
        var buffer = ByteBuffer(string: "x")
        buffer.writeDecimal(value)
        #expect(buffer.readString(length: buffer.readableBytes) == "x\(value)")
    }
}
