import Testing

@testable import ReplicationCore

@Suite struct WriterBatchesTests {
    func row(_ text: String) -> RowJSON { try! RowJSON(validating: text) }

    @Test func batchRowsWaitForTheirClosingToken() throws {
        var batches = WriterBatches(configuration: ProtocolConfiguration())
        #expect(try batches.add(stream: "caches", token: .batch, row: row("[1, 2, 3]")).get() == nil)
        #expect(batches.heldRows == 1)
        let batch = try batches.add(stream: "caches", token: .value(4), row: row("[4, 5, 6]")).get()
        #expect(batch == WriterBatches.Closed(stream: .caches, token: 4, rowCount: 2))
        #expect(batches.heldRows == 0)
    }

    @Test func rowsAreCheckedAgainstTheStreamShape() {
        var batches = WriterBatches(configuration: ProtocolConfiguration())
        _ = batches.add(stream: "caches", token: .batch, row: row("[1, 2, 3]"))
        #expect(
            batches.add(stream: "caches", token: .value(2), row: row("[1, 2]"))
                == .failure(
                    ClosingError(
                        "rejected RDATA caches 2: a caches row is a JSON array of 3 fields (got 2)", reason: .writerRejected)))
        // Nothing of the unfinished batch is kept.
        #expect(batches.heldRows == 0)
        #expect(
            batches.add(stream: "nosuch", token: .value(2), row: row("[]"))
                == .failure(ClosingError("rejected RDATA nosuch 2: unknown stream", reason: .writerRejected)))
        #expect(
            batches.add(stream: "typing", token: .value(2), row: row(#"{"a": 1}"#))
                == .failure(
                    ClosingError(
                        "rejected RDATA typing 2: a typing row is a JSON array of 2 fields (got not an array)",
                        reason: .writerRejected)))
    }

    @Test func rowsMustFitTheLineLimitWithTheirFinalToken() {
        var batches = WriterBatches(configuration: ProtocolConfiguration(maxLineLength: 40))
        // "RDATA user_signature batch " is 27 bytes, so 13 bytes of row fit.
        #expect((try? batches.add(stream: "user_signature", token: .value(1), row: row(#"["@abcdefgh"]"#)).get()) != nil)
        guard case .failure(let error) = batches.add(stream: "user_signature", token: .value(2), row: row(#"["@abcdefghi"]"#))
        else {
            Issue.record("accepted a row longer than the line limit")
            return
        }
        #expect(error.text.contains("does not fit the 40-byte line limit"))
    }

    @Test func batchesAreBounded() {
        var batches = WriterBatches(configuration: ProtocolConfiguration(maxBatchRows: 2))
        _ = batches.add(stream: "push_rules", token: .batch, row: row("[1]"))
        _ = batches.add(stream: "push_rules", token: .batch, row: row("[1]"))
        #expect(
            batches.add(stream: "push_rules", token: .batch, row: row("[1]"))
                == .failure(
                    ClosingError("rejected RDATA push_rules batch: a batch may hold at most 2 rows", reason: .writerRejected)))
    }

    @Test func positionIsRefusedInsideAnUnfinishedBatch() {
        var batches = WriterBatches(configuration: ProtocolConfiguration())
        #expect(batches.position(stream: "events", token: 3) == .success(.events))
        _ = batches.add(stream: "events", token: .batch, row: row("[1, 2]"))
        #expect(
            batches.position(stream: "events", token: 3)
                == .failure(
                    ClosingError(
                        "rejected POSITION events 3: the stream has an unfinished batch of 1 rows", reason: .writerRejected)))
    }
}
