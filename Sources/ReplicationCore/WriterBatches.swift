/// Turns a writer's `RDATA` lines into whole batches, one stream at a time.
///
/// `batch` rows wait here until the row with the numeric token that closes them arrives; only then is
/// the batch handed to the log, so a batch is stored whole or not at all. Rows are checked here, once, at
/// ingest: after that they are trusted bytes on the fan-out path.
public struct WriterBatches: Sendable {
    /// Rows that share one token, ready to append.
    public struct Batch: Equatable, Sendable {
        public var stream: StreamName
        public var token: Int64
        public var rows: [String]
    }

    private var open = [[String]](repeating: [], count: StreamName.all.count)
    private let configuration: ProtocolConfiguration

    public init(configuration: ProtocolConfiguration) {
        self.configuration = configuration
    }

    /// Rows held for streams whose batch is not closed yet.
    public var heldRows: Int { open.reduce(0) { $0 + $1.count } }

    /// Adds one row; returns the batch it closes, if its token is numeric.
    public mutating func add(stream name: String, token: RowToken, row: RowJSON) -> Result<Batch?, ClosingError> {
        let reject = { (why: String) in ClosingError.writerRejected(.RDATA, stream: name, token: token.wireText, why) }
        guard let stream = StreamName(name) else { return .failure(reject("unknown stream")) }
        guard row.fits(stream) else {
            open[stream.index] = []
            let found: String
            if case .array(let count) = row.shape { found = "\(count)" } else { found = "not an array" }
            return .failure(reject("a \(stream) row is a JSON array of \(stream.fieldCount) fields (got \(found))"))
        }
        open[stream.index].append(row.text)
        guard case .value(let closingToken) = token else {
            if open[stream.index].count > configuration.maxBatchRows {
                open[stream.index] = []
                return .failure(reject("a batch may hold at most \(configuration.maxBatchRows) rows"))
            }
            return .success(nil)
        }
        let rows = open[stream.index]
        open[stream.index] = []
        // Live fan-out writes `batch` in place of the token, catch-up the number: both must fit.
        let tokenWidth = max(String(closingToken).utf8.count, RowToken.batch.wireText.utf8.count)
        let overhead = "RDATA ".utf8.count + stream.rawValue.utf8.count + 1 + tokenWidth + 1
        if let long = rows.first(where: { overhead + $0.utf8.count > configuration.maxLineLength }) {
            return .failure(
                reject(
                    "row of \(long.utf8.count) bytes does not fit the \(configuration.maxLineLength)-byte line limit"))
        }
        return .success(Batch(stream: stream, token: closingToken, rows: rows))
    }

    /// A writer's `POSITION`: advances a stream without a row. Not allowed inside an unfinished batch.
    public func position(stream name: String, token: Int64) -> Result<StreamName, ClosingError> {
        let reject = { (why: String) in ClosingError.writerRejected(.POSITION, stream: name, token: String(token), why) }
        guard let stream = StreamName(name) else { return .failure(reject("unknown stream")) }
        let held = open[stream.index].count
        guard held == 0 else { return .failure(reject("the stream has an unfinished batch of \(held) rows")) }
        return .success(stream)
    }
}
