/// The rules for a writer's `RDATA` and `POSITION` lines, one stream at a time: which batch a row belongs
/// to, when the batch is complete, and what is refused.
///
/// `batch` rows wait until the row with the numeric token that closes them arrives; only then is the batch
/// handed to the log, so a batch is stored whole or not at all. Rows are checked here, once, at ingest:
/// after that they are trusted bytes on the fan-out path. The rows' bytes are the caller's to keep; this
/// counts them. A batch's token may be at most ``ProtocolConfiguration/maxTokenStep`` above the stream's
/// current token (whether it is after it is the log's to decide, when it stores the batch).
public struct WriterBatches: Sendable {
    /// A batch the last row completed: its rows are the ones held for the stream plus that row.
    public struct Closed: Equatable, Sendable {
        public var stream: StreamName
        public var token: Int64
        public var rowCount: Int
    }

    private struct Open: Sendable {
        var rows = 0
        var longestRow = 0
    }

    private var open = [Open](repeating: Open(), count: StreamName.all.count)
    /// Per stream, the highest token of this writer's batches let through: the stream's token once they
    /// are stored. A token within the step of it needs no look at the log's head.
    private var reached = [Int64?](repeating: nil, count: StreamName.all.count)
    private let configuration: ProtocolConfiguration

    public init(configuration: ProtocolConfiguration) {
        self.configuration = configuration
    }

    /// Rows held for streams whose batch is not closed yet.
    package var heldRows: Int { open.reduce(0) { $0 + $1.rows } }

    /// Adds one row of a stream named on the wire; returns the batch it closes, if its token is numeric.
    /// `head` gives a stream's current token in the log.
    public mutating func add(
        stream name: String, token: RowToken, row: RowJSON, head: (StreamName) -> Int64
    ) -> Result<Closed?, ClosingError> {
        guard let stream = StreamName(name) else {
            return .failure(.writerRejected(.RDATA, stream: name, token: token.wireText, "unknown stream"))
        }
        return add(stream, token: token, shape: row.shape, byteCount: row.text.utf8.count, head: head)
    }

    /// Adds one row of `byteCount` bytes whose JSON has `shape`; returns the batch it closes, if its token
    /// is numeric. On a refusal the stream's unfinished batch is dropped. `head` gives a stream's current
    /// token in the log.
    public mutating func add(
        _ stream: StreamName, token: RowToken, shape: JSONScanner.TopLevel, byteCount: Int,
        head: (StreamName) -> Int64
    ) -> Result<Closed?, ClosingError> {
        let reject = { (why: String) in ClosingError.writerRejected(.RDATA, stream: stream.rawValue, token: token.wireText, why) }
        guard shape == .array(count: stream.fieldCount) else {
            open[stream.index] = Open()
            let found: String
            if case .array(let count) = shape { found = "\(count)" } else { found = "not an array" }
            return .failure(reject("a \(stream) row is a JSON array of \(stream.fieldCount) fields (got \(found))"))
        }
        var batch = open[stream.index]
        batch.rows += 1
        batch.longestRow = max(batch.longestRow, byteCount)
        guard case .value(let closingToken) = token else {
            if batch.rows > configuration.maxBatchRows {
                open[stream.index] = Open()
                return .failure(reject("a batch may hold at most \(configuration.maxBatchRows) rows"))
            }
            open[stream.index] = batch
            return .success(nil)
        }
        open[stream.index] = Open()
        // Live fan-out writes `batch` in place of the token, catch-up the number: both must fit.
        let tokenWidth = max(decimalWidth(closingToken), RowToken.batch.wireText.utf8.count)
        let overhead = "RDATA ".utf8.count + stream.rawValue.utf8.count + 1 + tokenWidth + 1
        guard overhead + batch.longestRow <= configuration.maxLineLength else {
            return .failure(
                reject(
                    "row of \(batch.longestRow) bytes does not fit the \(configuration.maxLineLength)-byte line limit"))
        }
        if let tooFar = step(stream, to: closingToken, head: head) { return .failure(reject(tooFar)) }
        return .success(Closed(stream: stream, token: closingToken, rowCount: batch.rows))
    }

    /// A writer's `POSITION`: advances a stream without a row. Not allowed inside an unfinished batch.
    /// `head` gives a stream's current token in the log.
    public mutating func position(
        stream name: String, token: Int64, head: (StreamName) -> Int64
    ) -> Result<StreamName, ClosingError> {
        let reject = { (why: String) in ClosingError.writerRejected(.POSITION, stream: name, token: String(token), why) }
        guard let stream = StreamName(name) else { return .failure(reject("unknown stream")) }
        let held = open[stream.index].rows
        guard held == 0 else { return .failure(reject("the stream has an unfinished batch of \(held) rows")) }
        if let tooFar = step(stream, to: token, head: head) { return .failure(reject(tooFar)) }
        return .success(stream)
    }

    /// Why `token` is too far above the stream's current token (the log's head, or this writer's batches
    /// on their way to it), if it is. The head is looked up only when the token is beyond the step from
    /// this writer's last batch, so a writer going one step at a time never asks.
    private mutating func step(_ stream: StreamName, to token: Int64, head: (StreamName) -> Int64) -> String? {
        let maxStep = configuration.maxTokenStep
        let isWithinStep = { (current: Int64) in
            let (limit, overflow) = current.addingReportingOverflow(maxStep)
            return overflow || token <= limit
        }
        let known = reached[stream.index]
        let current = if let known, isWithinStep(known) { known } else { max(head(stream), known ?? .min) }
        guard isWithinStep(current) else {
            return "token must be at most \(maxStep) above the stream's current token \(current)"
        }
        reached[stream.index] = max(current, token)
        return nil
    }
}
