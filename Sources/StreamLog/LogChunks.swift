import CSQLite
import NIOCore
import ReplicationCore

/// How the durable log stores rows: a stream's rows as chunks of consecutive catch-up lines
/// (`RDATA <stream> <token> <row>\n`, exactly the bytes catch-up sends), tens of KiB each, one SQLite
/// row per chunk. A catch-up page is then a few reads of whole chunks into one buffer instead of a
/// statement step and a line built per row, and a commit is one insert per chunk instead of one per row.
///
/// A chunk always ends on a batch boundary, so a page of whole chunks does too. There is no offsets
/// index: each line carries its token, and only a reader starting inside a chunk (the first page of a
/// catch-up from an arbitrary token) scans the chunk's lines to skip the rows it already has.
enum LogChunks {
    /// A chunk being built is closed before rows of a new token once it holds this many bytes: a catch-up
    /// page (256 KiB by default) is then mostly one chunk, served from the cache without a copy.
    static let targetBytes = 256 * 1024

    /// Schema version 2. Integer columns come before the lines so that reading them never touches the
    /// blob's overflow pages.
    static let createTable = """
        CREATE TABLE chunks (
            stream INTEGER NOT NULL, last_token INTEGER NOT NULL, first_token INTEGER NOT NULL,
            row_count INTEGER NOT NULL, appended_at INTEGER NOT NULL, lines BLOB NOT NULL,
            PRIMARY KEY (stream, last_token));
        """

    /// Takes a version 1 database (a table row per stream row) to version 2 in the caller's transaction:
    /// its rows, in order, become chunks, and the old table goes.
    static func migrate(fromRows connection: SQLiteConnection) throws {
        try connection.execute(createTable)
        var writer = try ChunkWriter(connection)
        let rows = try connection.prepare(
            "SELECT stream, token, appended_at, row FROM rows ORDER BY stream, token, seq")
        var line = ByteBufferAllocator().buffer(capacity: 1024)
        while try rows.step() {
            let index = Int(rows.integer(0))
            guard StreamName.all.indices.contains(index) else {
                throw SQLiteStreamLog.OpenError(
                    description: "it holds rows of stream \(index), which this build does not know")
            }
            line.clear()
            line.writeBytes(rows.textBytes(3))
            line.writeInteger(UInt8(ascii: "\n"))
            let token = rows.integer(1)
            try writer.append(
                .rows(StreamName.all[index], RowTexts(bytes: line, count: 1), token: .exactly(token)), storedAt: token,
                appendedAt: rows.integer(2))
        }
        rows.finish()
        try writer.finish()
        try connection.execute("DROP TABLE rows")
    }

    /// Reads one page of rows after `token` in the transaction the caller holds: whole chunks within
    /// `maxBytes` (at least one), the first one cut after `token` when the reader starts inside it.
    /// A page of one chunk shares the cached chunk's bytes; a chunk that would take the page past
    /// `maxBytes` waits for the next page, so that full chunks are never copied into a page of two.
    static func readPage(
        _ connection: SQLiteConnection, stream: StreamName, after token: Int64, maxBytes: Int, cache: ChunkCache
    ) throws -> LogPage {
        let head = try connection.prepare("SELECT current_token, oldest_servable FROM streams WHERE id = ?")
        try head.bind(.integer(Int64(stream.index)))
        let (current, oldest) = try head.step() ? (head.integer(0), head.integer(1)) : (0, 0)
        head.finish()
        guard token >= oldest else { throw StreamLogError.fallenBehind(oldestServable: oldest) }
        // The lines are selected only for a chunk the cache does not hold: a statement that has the column
        // copies the whole blob out of its overflow pages at every step, whether the cache holds it or not.
        let chunks = try connection.prepare(
            """
            SELECT first_token, last_token, row_count, length(lines) FROM chunks
            WHERE stream = ? AND last_token > ?
            ORDER BY last_token
            """)
        let storedLines = try connection.prepare("SELECT lines FROM chunks WHERE stream = ? AND last_token = ?")
        try chunks.bind(.integer(Int64(stream.index)), .integer(token))
        defer { chunks.finish() }
        var lines = ByteBuffer()
        var count = 0
        var lastToken = token
        var reachedHead = true
        while try chunks.step() {
            let (first, last, rows) = (chunks.integer(0), chunks.integer(1), Int(chunks.integer(2)))
            guard lines.readableBytes == 0 || lines.readableBytes + Int(chunks.integer(3)) <= maxBytes else {
                reachedHead = false
                break
            }
            var chunkLines = try cache.lines(stream: stream.index, tokens: first...last) { () throws(SQLiteError) in
                try storedLines.bind(.integer(Int64(stream.index)), .integer(last))
                defer { storedLines.finish() }
                // The row was just stepped in this transaction's snapshot: it cannot be gone.
                guard try storedLines.step() else {
                    throw SQLiteError(code: SQLITE_CORRUPT, message: "chunk \(last) of \(stream) not found")
                }
                return ByteBuffer(bytes: storedLines.blobBytes(0))
            }
            count += rows
            if first <= token {
                let (offset, skipped) = chunkLines.withUnsafeReadableBytes { offsetOfFirstRow(after: token, in: $0) }
                chunkLines.moveReaderIndex(forwardBy: offset)
                count -= skipped
            }
            if lines.readableBytes == 0 {
                lines = chunkLines
            } else {
                lines.writeBuffer(&chunkLines)
            }
            lastToken = last
        }
        return LogPage(
            lines: lines, rowCount: count, endToken: reachedHead ? max(current, lastToken) : lastToken,
            reachedHead: reachedHead)
    }

    /// Where the first line with a token greater than `token` starts, and how many lines come before it.
    static func offsetOfFirstRow(after token: Int64, in lines: UnsafeRawBufferPointer) -> (offset: Int, skipped: Int) {
        var start = 0
        var skipped = 0
        while start < lines.count {
            let line = CatchUpLines.parse(at: start, in: lines)
            if let lineToken = line.token, lineToken > token { break }
            start = line.next
            skipped += 1
        }
        return (start, skipped)
    }

    /// Merges runs of consecutive small chunks of `stream` after `token` (each under a quarter of
    /// ``targetBytes``: a light load commits a row or two at a time) into chunks of up to ``targetBytes``
    /// and `maxRows` rows (so that retention, which drops whole chunks, keeps only so many rows more than
    /// asked), in one transaction of its own. Returns the last token of the chunks that are final, to start after
    /// next time.
    static func compact(
        _ connection: SQLiteConnection, stream: StreamName, after token: Int64, maxRows: Int
    ) throws(SQLiteError) -> Int64 {
        let sizes = try connection.prepare(
            """
            SELECT last_token, length(lines), row_count FROM chunks WHERE stream = ? AND last_token > ?
            ORDER BY last_token
            """)
        try sizes.bind(.integer(Int64(stream.index)), .integer(token))
        // Groups of small chunks to merge, by the last tokens of their first and last chunk.
        var groups: [(from: Int64, through: Int64, count: Int)] = []
        var group: (from: Int64, through: Int64, count: Int, bytes: Int, rows: Int)?
        var final = token
        while try sizes.step() {
            let (last, bytes, rows) = (sizes.integer(0), Int(sizes.integer(1)), Int(sizes.integer(2)))
            let small = bytes < targetBytes / 4 && rows <= maxRows
            if small, let open = group, open.bytes + bytes <= targetBytes, open.rows + rows <= maxRows {
                group = (open.from, last, open.count + 1, open.bytes + bytes, open.rows + rows)
                continue
            }
            if let open = group, open.count > 1 { groups.append((open.from, open.through, open.count)) }
            if let open = group { final = open.through }
            group = small ? (last, last, 1, bytes, rows) : nil
            if group == nil { final = last }
        }
        sizes.finish()
        // The last group may still grow: merged now, it is looked at again next time.
        if let open = group, open.count > 1 { groups.append((open.from, open.through, open.count)) }
        guard !groups.isEmpty else { return final }
        try connection.execute("BEGIN IMMEDIATE")
        var writer = try ChunkWriter(connection)
        let chunks = try connection.prepare(
            """
            SELECT first_token, last_token, row_count, appended_at, lines FROM chunks
            WHERE stream = ? AND last_token BETWEEN ? AND ? ORDER BY last_token
            """)
        for merged in groups {
            try chunks.bind(.integer(Int64(stream.index)), .integer(merged.from), .integer(merged.through))
            while try chunks.step() {
                let lines = chunks.blobBytes(4)
                try writer.add(
                    stream, tokens: chunks.integer(0)...chunks.integer(1), rowCount: Int(chunks.integer(2)),
                    appendedAt: chunks.integer(3), mayClose: false
                ) { $0.writeBytes(lines) }
            }
            chunks.finish()
            try connection.prepare("DELETE FROM chunks WHERE stream = ? AND last_token BETWEEN ? AND ?")
                .bind(.integer(Int64(stream.index)), .integer(merged.from), .integer(merged.through)).run()
            try writer.finish()
        }
        try connection.execute("COMMIT")
        return final
    }

    /// The last token of the newest chunk that retention lets go: every row of it is beyond the newest
    /// `keepRows` of the stream and it was stored before `appendedBefore` (whole chunks only, so a
    /// stream keeps at least that many rows, up to a chunk more).
    static func prunableThrough(
        _ connection: SQLiteConnection, stream: StreamName, keepRows: Int?, appendedBefore: Int64
    ) throws(SQLiteError) -> Int64? {
        let chunks = try connection.prepare(
            "SELECT last_token, row_count, appended_at FROM chunks WHERE stream = ? ORDER BY last_token DESC")
        try chunks.bind(.integer(Int64(stream.index)))
        defer { chunks.finish() }
        var newerRows = 0
        while try chunks.step() {
            if newerRows >= keepRows ?? 0, chunks.integer(2) < appendedBefore { return chunks.integer(0) }
            newerRows += Int(chunks.integer(1))
        }
        return nil
    }

    /// Removes every row of `stream` after `token`, in the caller's transaction: the chunks after it go,
    /// and the one holding it keeps its lines up to it. Returns how many rows were removed.
    static func removeRows(
        _ connection: SQLiteConnection, stream: StreamName, after token: Int64
    ) throws(SQLiteError) -> Int {
        let id = Int64(stream.index)
        let after = try connection.prepare("SELECT sum(row_count) FROM chunks WHERE stream = ? AND first_token > ?")
            .bind(.integer(id), .integer(token))
        var removed = try after.step() ? Int(after.integer(0)) : 0
        after.finish()
        try connection.prepare("DELETE FROM chunks WHERE stream = ? AND first_token > ?")
            .bind(.integer(id), .integer(token)).run()
        // Chunks do not overlap: at most one holds rows on both sides of the token.
        let straddling = try connection.prepare(
            """
            SELECT first_token, last_token, row_count, appended_at, lines FROM chunks
            WHERE stream = ? AND first_token <= ? AND last_token > ?
            """)
        try straddling.bind(.integer(id), .integer(token), .integer(token))
        guard try straddling.step() else { return removed }
        let (first, last, rows, appendedAt) = (
            straddling.integer(0), straddling.integer(1), Int(straddling.integer(2)), straddling.integer(3)
        )
        let all = straddling.blobBytes(4)
        let (length, kept) = offsetOfFirstRow(after: token, in: all)
        let keptLines = ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: all[..<length]))
        straddling.finish()
        var keptThrough = first
        keptLines.withUnsafeReadableBytes { lines in
            CatchUpLines.forEach(of: lines) { _, lineToken, _ in keptThrough = lineToken ?? keptThrough }
        }
        try connection.prepare("DELETE FROM chunks WHERE stream = ? AND last_token = ?")
            .bind(.integer(id), .integer(last)).run()
        var writer = try ChunkWriter(connection)
        try writer.add(stream, tokens: first...keptThrough, rowCount: kept, appendedAt: appendedAt, mayClose: false) {
            $0.writeImmutableBuffer(keptLines)
        }
        try writer.finish()
        removed += rows - kept
        return removed
    }

    /// Drops every chunk of `stream` up to and including `token`, in the caller's transaction.
    static func drop(_ connection: SQLiteConnection, stream: StreamName, through token: Int64) throws(SQLiteError) {
        try connection.prepare("DELETE FROM chunks WHERE stream = ? AND last_token <= ?")
            .bind(.integer(Int64(stream.index)), .integer(token)).run()
    }
}

/// Gathers the rows of one transaction into chunks, per stream, and inserts each chunk once it is full
/// and the rest at ``finish()``.
struct ChunkWriter {
    private struct OpenChunk {
        var firstToken: Int64
        var lastToken: Int64
        var rowCount = 0
        var appendedAt: Int64
        var lines: ByteBuffer
    }

    private let insert: SQLiteConnection.Statement
    private var open: [OpenChunk?] = Array(repeating: nil, count: StreamName.all.count)

    init(_ connection: SQLiteConnection) throws(SQLiteError) {
        insert = try connection.prepare(
            """
            INSERT INTO chunks (stream, last_token, first_token, row_count, appended_at, lines)
            VALUES (?, ?, ?, ?, ?, ?)
            """)
    }

    /// Adds a batch's rows, stored at `token`, as the lines catch-up sends: a batch's rows get `token`
    /// each; a run's lines already are those, and since each of its rows is a batch of its own, a long run
    /// is cut between rows so that chunks stay near ``LogChunks/targetBytes``.
    mutating func append(_ batch: NewBatch, storedAt token: Int64, appendedAt: Int64) throws(SQLiteError) {
        switch batch {
        case .advance:
            return
        case .rows(let stream, let rows, _):
            guard !rows.isEmpty else { return }
            try add(stream, tokens: token...token, rowCount: rows.count, appendedAt: appendedAt) {
                RowLines.catchUp(rows, stream: stream, token: token, into: &$0)
            }
        case .run(let stream, var lines, let tokens):
            var next = 0
            while next < tokens.count {
                let room = LogChunks.targetBytes - (open[stream.index]?.lines.readableBytes ?? 0)
                let (length, count) = lines.withUnsafeReadableBytes { Self.wholeLines(of: $0, within: room) }
                var piece = lines.readSlice(length: length)!
                try add(
                    stream, tokens: tokens[next]...tokens[next + count - 1], rowCount: count, appendedAt: appendedAt
                ) {
                    $0.writeBuffer(&piece)
                }
                next += count
            }
        }
    }

    /// The bytes and number of the first lines of `lines` that fit in `room` bytes (at least one line).
    private static func wholeLines(of lines: UnsafeRawBufferPointer, within room: Int) -> (length: Int, count: Int) {
        var length = 0
        var count = 0
        while length < lines.count {
            let end = lines.firstIndex(of: UInt8(ascii: "\n"), in: length..<lines.count)! + 1
            if count > 0, end > room { break }
            length = end
            count += 1
        }
        return (length, count)
    }

    /// Adds rows with tokens `tokens` to the stream's open chunk, written by `write`; a full chunk is
    /// stored first (a batch is never split: rows of one token stay in one chunk) unless `mayClose` is
    /// false (compaction, which has sized its groups itself).
    mutating func add(
        _ stream: StreamName, tokens: ClosedRange<Int64>, rowCount: Int, appendedAt: Int64, mayClose: Bool = true,
        write: (inout ByteBuffer) -> Void
    ) throws(SQLiteError) {
        if mayClose, let chunk = open[stream.index], chunk.lines.readableBytes >= LogChunks.targetBytes,
            chunk.lastToken != tokens.lowerBound
        {
            try flush(stream)
        }
        var chunk =
            open[stream.index]
            ?? OpenChunk(
                firstToken: tokens.lowerBound, lastToken: tokens.upperBound, appendedAt: appendedAt,
                lines: ByteBufferAllocator().buffer(capacity: 16 * 1024))
        open[stream.index] = nil  // the buffer stays uniquely referenced while it grows
        write(&chunk.lines)
        chunk.lastToken = tokens.upperBound
        chunk.rowCount += rowCount
        chunk.appendedAt = max(chunk.appendedAt, appendedAt)
        open[stream.index] = chunk
    }

    /// Inserts every chunk still open.
    mutating func finish() throws(SQLiteError) {
        for stream in StreamName.all where open[stream.index] != nil { try flush(stream) }
    }

    private mutating func flush(_ stream: StreamName) throws(SQLiteError) {
        guard let chunk = open[stream.index] else { return }
        open[stream.index] = nil
        try chunk.lines.withUnsafeReadableBytes { bytes throws(SQLiteError) in
            try insert.bind(
                .integer(Int64(stream.index)), .integer(chunk.lastToken), .integer(chunk.firstToken),
                .integer(Int64(chunk.rowCount)), .integer(chunk.appendedAt), .blob(bytes)
            ).run()
        }
    }
}
