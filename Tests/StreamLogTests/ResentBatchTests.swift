import NIOCore
import ReplicationCore
import StreamLog
import Testing

/// A writer's batch refused as not after the head, compared with the catch-up lines the log stores.
@Suite struct ResentBatchComparisonTests {
    /// Catch-up lines of `typing` rows (`[room, [users]]`) at their tokens.
    func lines(_ rows: [(Int64, String)]) -> ByteBuffer {
        ByteBuffer(string: rows.map { "RDATA typing \($0.0) [\"\($0.1)\", []]\n" }.joined())
    }

    /// A run of one-row batches, as a writer's lines.
    func run(_ rows: [(Int64, String)]) -> NewBatch {
        .run(.typing, lines: lines(rows), tokens: rows.map(\.0))
    }

    @Test func aRunPastTheHeadIsComparedUpToItAndTheRestIsNew() throws {
        let resent = try #require(ResentBatch(run([(4, "a"), (6, "b"), (7, "c"), (9, "d")]), head: 7))
        #expect(resent.storedThrough == 7)
        #expect(resent.positions == [4, 6, 7].map { StreamPosition(.typing, $0) })
        let remainder = try #require(resent.remainder)
        #expect(remainder.rowTokens == [9])
        guard case .run(_, let rest, _) = remainder else {
            Issue.record("not a run")
            return
        }
        #expect(String(buffer: rest) == "RDATA typing 9 [\"d\", []]\n")
        // Lines before the first token and after the head are not the batch's.
        let stored = lines([(3, "z"), (4, "a"), (6, "b"), (7, "c"), (8, "y")])
        #expect(resent.compare(withStored: stored) == .identical)
        #expect(
            resent.compare(withStored: lines([(4, "a"), (5, "x"), (6, "b"), (7, "c")]))
                == .differs(token: 5, "the log stores 1 row at token 5, the re-sent batch has 0"))
        #expect(
            resent.compare(withStored: lines([(4, "a"), (7, "c")]))
                == .differs(token: 6, "nothing is stored at token 6"))
        #expect(
            resent.compare(withStored: lines([(4, "a"), (6, "bb"), (7, "c")]))
                == .differs(token: 6, "row 1 of 1 at token 6 differs from the stored row at byte 4"))
    }

    @Test func aBatchOfSeveralRowsMustMatchRowForRow() throws {
        let batch = NewBatch(stream: .typing, rows: [#"["a", []]"#, #"["b", []]"#], token: .exactly(5))
        let resent = try #require(ResentBatch(batch, head: 8))
        #expect(resent.positions == [StreamPosition(.typing, 5)])
        #expect(resent.remainder == nil)
        #expect(resent.compare(withStored: lines([(5, "a"), (5, "b")])) == .identical)
        #expect(
            resent.compare(withStored: lines([(5, "a"), (5, "c")]))
                == .differs(token: 5, "row 2 of 2 at token 5 differs from the stored row at byte 3"))
        #expect(
            resent.compare(withStored: lines([(5, "a")]))
                == .differs(token: 5, "the log stores 1 row at token 5, the re-sent batch has 2"))
    }

    @Test func aPositionRepeatsWhereNoRowIsStored() throws {
        let position = try #require(ResentBatch(NewBatch(stream: .typing, rows: [], token: .exactly(5)), head: 8))
        #expect(position.compare(withStored: lines([(4, "a"), (6, "b")])) == .identical)
        #expect(
            position.compare(withStored: lines([(5, "a")]))
                == .differs(token: 5, "the log stores 1 row at token 5, the re-sent batch has 0"))
        // Rows the server makes take the next token: never a re-sent batch.
        #expect(ResentBatch(NewBatch(stream: .typing, rows: ["[\"a\", []]"], token: .next), head: 8) == nil)
    }
}
