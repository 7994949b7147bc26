import Testing

@testable import ReplicationCore

@Suite struct WriterRowLineTests {
    func recognise(_ line: [UInt8]) -> WriterRowLine? {
        line.withUnsafeBytes { WriterRowLine($0) }
    }

    func recognise(_ line: String) -> WriterRowLine? { recognise(Array(line.utf8)) }

    @Test func commonLinesAreRecognisedOnTheirBytes() {
        let event = recognise(#"RDATA events 5 ["ev", ["$a", "!r", "m.room.message", null, null, null]]"#)
        #expect(event?.stream == .events && event?.token == .value(5) && event?.rowOffset == 15)
        let cache = recognise(#"RDATA caches batch ["f", ["k"], 1]"#)
        #expect(cache?.stream == .caches && cache?.token == .batch && cache?.rowOffset == 19)
        #expect(recognise(#"RDATA typing 0 ["!r", []]"#)?.token == .value(0))
        #expect(recognise(#"RDATA typing 999999999999999999 ["!r", []]"#)?.token == .value(999_999_999_999_999_999))
        #expect(recognise(#"RDATA typing 7 ["!r", ["@ü:example.org"]]"#)?.token == .value(7))
    }

    /// Each of these the general path reads differently, or refuses with an error text of its own.
    @Test(arguments: [
        #"RDATA nosuch 5 ["a"]"#,
        #"RDATA typing 05 ["!r", []]"#,
        #"RDATA typing +5 ["!r", []]"#,
        #"RDATA typing 5_0 ["!r", []]"#,
        #"RDATA typing -5 ["!r", []]"#,
        #"RDATA typing 1000000000000000000 ["!r", []]"#,
        #"RDATA typing  5 ["!r", []]"#,
        #"RDATA typing 5 ["!r"]"#,
        #"RDATA typing 5 {"a": 1}"#,
        #"RDATA typing 5 ["!r", []"#,
        #"RDATA typing 5 "#,
        "RDATA typing 5",
        "RDATA typing",
        #"POSITION typing 5"#,
        #"rdata typing 5 ["!r", []]"#,
        #"RDATA typing batchy ["!r", []]"#,
    ])
    func unusualLinesAreLeftToTheGeneralPath(line: String) {
        #expect(recognise(line) == nil)
    }

    @Test func invalidUTF8IsLeftToTheGeneralPath() {
        let line = Array(#"RDATA typing 5 ["!r", [""#.utf8) + [0xC3, 0x28] + Array(#""]]"#.utf8)
        #expect(recognise(line) == nil)
        // Long enough for the word-at-a-time check to meet the bad byte after whole ASCII words.
        let long = Array(#"RDATA typing 5 ["!r", ["abcdefghijklmnopqrstuvwxyz"#.utf8) + [0xFF] + Array(#""]]"#.utf8)
        #expect(recognise(long) == nil)
    }

    @Test(arguments: [
        #"RDATA events 5 ["ev", ["$a", "!r", "m.room.message", null, null, null]]"#,
        #"RDATA caches batch ["f", ["k"], 1]"#,
        #"RDATA typing 123456 ["!r", ["@ü:example.org"]]"#,
        #"RDATA typing 5  ["!r", []]"#,
    ])
    func recognisedLinesMeanWhatTheGeneralPathReads(line: String) throws {
        let recognised = try #require(recognise(line))
        let (_, rest) = CommandCodec.split(line[...])
        guard case .success(.rdata(let stream, let token, let row)) = CommandCodec.parse(.RDATA, rest: rest) else {
            Issue.record("the general path refused \(line)")
            return
        }
        #expect(stream == recognised.stream.rawValue)
        #expect(token == recognised.token)
        #expect(Array(row.text.utf8) == Array(line.utf8.dropFirst(recognised.rowOffset)))
        #expect(row.fits(recognised.stream))
    }

    @Test func commandIndicesFollowTheOrderOfAllCases() {
        #expect(CommandName.allCases.map(\.index) == Array(0..<CommandName.allCases.count))
    }
}
