import Testing

@testable import ReplicationCore

@Suite struct WriterBatchesTests {
    func row(_ text: String) -> RowJSON { try! RowJSON(validating: text) }
    /// The head of every stream in an empty log.
    let empty = { (_: StreamName) -> Int64 in 0 }

    @Test func batchRowsWaitForTheirClosingToken() throws {
        var batches = WriterBatches(configuration: ProtocolConfiguration())
        #expect(try batches.add(stream: "caches", token: .batch, row: row("[1, 2, 3]"), head: empty).get() == nil)
        #expect(batches.heldRows == 1)
        let batch = try batches.add(stream: "caches", token: .value(4), row: row("[4, 5, 6]"), head: empty).get()
        #expect(batch == WriterBatches.Closed(stream: .caches, token: 4, rowCount: 2))
        #expect(batches.heldRows == 0)
    }

    @Test func rowsAreCheckedAgainstTheStreamShape() {
        var batches = WriterBatches(configuration: ProtocolConfiguration())
        _ = batches.add(stream: "caches", token: .batch, row: row("[1, 2, 3]"), head: empty)
        #expect(
            batches.add(stream: "caches", token: .value(2), row: row("[1, 2]"), head: empty)
                == .failure(
                    ClosingError(
                        "rejected RDATA caches 2: a caches row is a JSON array of 3 fields (got 2)", reason: .writerRejected)))
        // Nothing of the unfinished batch is kept.
        #expect(batches.heldRows == 0)
        #expect(
            batches.add(stream: "nosuch", token: .value(2), row: row("[]"), head: empty)
                == .failure(ClosingError("rejected RDATA nosuch 2: unknown stream", reason: .writerRejected)))
        #expect(
            batches.add(stream: "typing", token: .value(2), row: row(#"{"a": 1}"#), head: empty)
                == .failure(
                    ClosingError(
                        "rejected RDATA typing 2: a typing row is a JSON array of 2 fields (got not an array)",
                        reason: .writerRejected)))
    }

    @Test func rowsMustFitTheLineLimitWithTheirFinalToken() {
        var batches = WriterBatches(configuration: ProtocolConfiguration(maxLineLength: 40))
        // "RDATA user_signature batch " is 27 bytes, so 13 bytes of row fit.
        let fits = batches.add(stream: "user_signature", token: .value(1), row: row(#"["@abcdefgh"]"#), head: empty)
        #expect((try? fits.get()) != nil)
        guard
            case .failure(let error) = batches.add(
                stream: "user_signature", token: .value(2), row: row(#"["@abcdefghi"]"#), head: empty)
        else {
            Issue.record("accepted a row longer than the line limit")
            return
        }
        #expect(error.text.contains("does not fit the 40-byte line limit"))
    }

    @Test func batchesAreBounded() {
        var batches = WriterBatches(configuration: ProtocolConfiguration(maxBatchRows: 2))
        _ = batches.add(stream: "push_rules", token: .batch, row: row("[1]"), head: empty)
        _ = batches.add(stream: "push_rules", token: .batch, row: row("[1]"), head: empty)
        #expect(
            batches.add(stream: "push_rules", token: .batch, row: row("[1]"), head: empty)
                == .failure(
                    ClosingError("rejected RDATA push_rules batch: a batch may hold at most 2 rows", reason: .writerRejected)))
    }

    @Test func positionIsRefusedInsideAnUnfinishedBatch() {
        var batches = WriterBatches(configuration: ProtocolConfiguration())
        #expect(batches.position(stream: "events", token: 3, head: empty) == .success(.events))
        _ = batches.add(stream: "events", token: .batch, row: row("[1, 2]"), head: empty)
        #expect(
            batches.position(stream: "events", token: 3, head: empty)
                == .failure(
                    ClosingError(
                        "rejected POSITION events 3: the stream has an unfinished batch of 1 rows", reason: .writerRejected)))
    }

    @Test func aTokenMayGoAtMostTheMaximumStepAboveTheStreamsToken() {
        var batches = WriterBatches(configuration: ProtocolConfiguration(maxTokenStep: 100))
        let head = { (stream: StreamName) -> Int64 in stream == .events ? 50 : 0 }
        #expect((try? batches.add(stream: "events", token: .value(150), row: row("[1, 2]"), head: head).get()) != nil)
        // Measured from this writer's last batch (on its way to the log), not from the log's older head.
        #expect((try? batches.add(stream: "events", token: .value(250), row: row("[1, 2]"), head: head).get()) != nil)
        #expect(
            batches.add(stream: "events", token: .value(351), row: row("[1, 2]"), head: head)
                == .failure(
                    ClosingError(
                        "rejected RDATA events 351: token must be at most 100 above the stream's current token 250",
                        reason: .writerRejected)))
        // A batch is judged by the token that closes it; a position is judged the same way.
        _ = batches.add(stream: "typing", token: .batch, row: row("[1, 2]"), head: head)
        #expect(
            batches.add(stream: "typing", token: .value(9_223_372_036_854_775_806), row: row("[1, 2]"), head: head)
                == .failure(
                    ClosingError(
                        "rejected RDATA typing 9223372036854775806: "
                            + "token must be at most 100 above the stream's current token 0",
                        reason: .writerRejected)))
        #expect(
            batches.position(stream: "caches", token: 101, head: head)
                == .failure(
                    ClosingError(
                        "rejected POSITION caches 101: token must be at most 100 above the stream's current token 0",
                        reason: .writerRejected)))
        #expect(batches.position(stream: "caches", token: 100, head: head) == .success(.caches))
    }

    @Test func theHeadIsAskedOnlyWhenATokenIsBeyondTheStepFromTheWritersLastBatch() {
        var batches = WriterBatches(configuration: ProtocolConfiguration(maxTokenStep: 10))
        var head: Int64 = 0
        var asked = 0
        let lookUp = { (_: StreamName) -> Int64 in
            asked += 1
            return head
        }
        for token in Int64(1)...30 {
            let added = batches.add(stream: "events", token: .value(token), row: row("[1, 2]"), head: lookUp)
            #expect((try? added.get()) != nil)
        }
        #expect(asked == 1)
        // Other writers moved the stream on: a token within the step of the head is accepted.
        head = 1_000
        let added = batches.add(stream: "events", token: .value(1_005), row: row("[1, 2]"), head: lookUp)
        #expect((try? added.get()) != nil)
        #expect(asked == 2)
        // The step is no overflow trap: near the end of the range every later token is within it.
        head = .max - 5
        #expect(batches.position(stream: "events", token: .max, head: lookUp) == .success(.events))
    }
}
