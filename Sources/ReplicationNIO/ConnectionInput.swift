import NIOCore
import ReplicationCore

/// The peer's bytes, step by step, as the session takes them: lines as text, and a writer's rows in their
/// common form taken on their bytes into its batches (``WriterIngest``), a whole run of rows in one step
/// rather than one step per row. The start of a line that has not ended yet is kept for the next read.
///
/// The connection splits its own lines rather than taking one pipeline event per line: a writer sends
/// hundreds of lines per read, and the per-event cost was a fifth of ingesting a row.
struct ConnectionInput {
    /// What one step found.
    enum Next {
        case line(String)
        /// A line that could not be read as text, or that was too long.
        case lineRejected(ClosingError)
        /// This many rows were taken into the writer's batches.
        case writerRows(Int)
        /// A writer's row broke the batch rules.
        case writerRowRejected(ClosingError)
    }

    /// The writer's batches, completed and unfinished.
    private var ingest: WriterIngest
    private var framer: LineFramer
    private var unfinishedLine = UnfinishedLine()
    /// Why the last run of rows stopped, told in the step after its rows.
    private var interruption: WriterIngest.Interruption?

    init(configuration: ProtocolConfiguration, head: @escaping (StreamName) -> Int64) {
        self.framer = LineFramer(maxLineLength: configuration.maxLineLength)
        self.ingest = WriterIngest(configuration: configuration, allocator: ByteBufferAllocator(), head: head)
    }

    /// A read's bytes, after the start of a line kept from the one before.
    mutating func begin(_ read: ByteBuffer) -> ByteBuffer { unfinishedLine.prepended(to: read) }

    /// The next step through `bytes`; a writer's rows are taken on their bytes while `takingWriterRows`.
    mutating func next(_ bytes: inout ByteBuffer, takingWriterRows: Bool) -> Next? {
        if let interruption = interruption.take() { return Self.step(after: interruption) }
        guard takingWriterRows else { return framer.nextFrame(&bytes).map(Self.step(reading:)) }
        let (taken, stop) = ingest.takeRows(from: &bytes, framer: &framer)
        guard taken > 0 else { return stop.map(Self.step(after:)) }
        interruption = stop
        return .writerRows(taken)
    }

    /// A writer's `RDATA` or `POSITION` that took the general path, into its batches; the error that closes
    /// the writer, if refused.
    mutating func take(_ command: Command) -> ClosingError? { ingest.take(command) }

    /// The writer's batches completed since the last call, and the bytes of their rows; `nil` when none.
    mutating func takeCompletedBatches() -> (batches: [WriterIngest.Submitted], bytes: Int)? {
        guard !ingest.isEmpty else { return nil }
        let bytes = ingest.completedBytes
        return (ingest.take(), bytes)
    }

    /// Starts or stops reading from the peer (NIO's `autoRead`): what a peer sends while it is not read
    /// from waits in the kernel, and TCP pushes back on it.
    func setReading(_ reading: Bool, of channel: any Channel, log: ConnectionLog) {
        do {
            try channel.syncOptions?.setOption(.autoRead, value: reading)
        } catch {
            log.readingNotChanged(error)
        }
    }

    /// Keeps what is left of the read's bytes, the start of a line, for the next read.
    mutating func end(_ rest: inout ByteBuffer, allocator: ByteBufferAllocator) {
        unfinishedLine.keep(&rest, allocator: allocator)
    }

    private static func step(after interruption: WriterIngest.Interruption) -> Next {
        switch interruption {
        case .generalPath(let frame): step(reading: frame)
        case .rejected(let rejection): .writerRowRejected(rejection)
        }
    }

    private static func step(reading frame: InboundFrame) -> Next {
        switch frame.text() {
        case .success(let text): .line(text)
        case .failure(let error): .lineRejected(error)
        }
    }
}
