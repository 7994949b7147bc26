import CSQLite
import ReplicationCore

#if canImport(Glibc)
import Glibc
#endif

/// The stream log of a data directory read end to end, apart from any server (`replication-sidecar check`).
///
/// SQLite's own integrity check covers every page of the file (a damaged page otherwise shows up only when
/// a catch-up reaches it); then every chunk's lines are read back, and every row is held to the log's
/// rules: a stream this build knows, a token no later than its stream's head, and a JSON array as wide as
/// its stream's rows.
public struct StreamLogCheck: Sendable {
    /// What is wrong, one line each, at most ``maxProblems`` of them.
    public private(set) var problems: [String] = []
    /// Problems found beyond the ones listed.
    public private(set) var unlistedProblems = 0
    public private(set) var streamCount = 0
    public private(set) var rowCount = 0

    public static let maxProblems = 20

    public var isHealthy: Bool { problems.isEmpty }

    /// Checks the log in `directory` without writing anything to it.
    public init(directory: String) {
        let path = SQLiteStreamLog.databasePath(in: directory)
        guard access(path, F_OK) == 0 else {
            report("there is no stream log at \(path)")
            return
        }
        do {
            let connection = try SQLiteConnection(path: path, access: .readOnly)
            if let problem = try SQLiteStreamLog.unreadableSchema(connection, path: path) {
                report(problem)
                return
            }
            let integrity = try connection.prepare("PRAGMA integrity_check(\(Self.maxProblems))")
            while try integrity.step() {
                let message = String(decoding: integrity.textBytes(0), as: UTF8.self)
                if message != "ok" { report("damaged: \(message)") }
            }
            // The rows of damaged pages cannot be read reliably; what SQLite found is the answer.
            guard isHealthy else { return }
            try checkRows(connection)
        } catch {
            report("cannot read \(path): \(error.message)")
        }
    }

    private mutating func checkRows(_ connection: SQLiteConnection) throws(SQLiteError) {
        var heads: [Int64?] = Array(repeating: nil, count: StreamName.all.count)
        let streams = try connection.prepare("SELECT id, name, current_token, oldest_servable FROM streams")
        while try streams.step() {
            let id = streams.integer(0)
            let name = String(decoding: streams.textBytes(1), as: UTF8.self)
            let (current, oldest) = (streams.integer(2), streams.integer(3))
            guard let stream = StreamName.all.first(where: { Int64($0.index) == id && $0.rawValue == name }) else {
                report("stream \(id) is named \(name.debugDescription), which this build does not know")
                continue
            }
            streamCount += 1
            heads[stream.index] = current
            if oldest > current {
                report("stream \(stream): oldest servable token \(oldest) is after its head \(current)")
            }
        }
        if try connection.integer("PRAGMA user_version") < 2 {
            // Written by an older build and not migrated yet: a table row per stream row.
            let rows = try connection.prepare("SELECT stream, token, seq, row FROM rows ORDER BY stream, token, seq")
            while try rows.step() {
                checkRow(rows.textBytes(3), stream: rows.integer(0), token: rows.integer(1), seq: rows.integer(2), heads: heads)
            }
            return
        }
        let chunks = try connection.prepare(
            "SELECT stream, first_token, last_token, row_count, lines FROM chunks ORDER BY stream, last_token")
        while try chunks.step() {
            let (id, first, last) = (chunks.integer(0), chunks.integer(1), chunks.integer(2))
            var (lines, previous, seq) = (0, first, Int64(0))
            CatchUpLines.forEach(of: chunks.blobBytes(4)) { name, token, row in
                lines += 1
                seq = token == previous ? seq + 1 : 0
                let known = id >= 0 && id < Int64(heads.count) && name.elementsEqual(StreamName.all[Int(id)].rawValue.utf8)
                if !known || token == nil || token! < previous || token! > last {
                    report("stream \(id): chunk \(first)...\(last) holds a line out of place: line \(lines)")
                    return
                }
                previous = token!
                checkRow(row, stream: id, token: token!, seq: seq, heads: heads)
            }
            if lines != chunks.integer(3) {
                report("stream \(id): chunk \(first)...\(last) holds \(lines) lines, not \(chunks.integer(3))")
            }
        }
    }

    /// A stream's row: of a stream with a head, no later than it, a JSON array as wide as the stream's rows.
    private mutating func checkRow(_ row: UnsafeRawBufferPointer, stream id: Int64, token: Int64, seq: Int64, heads: [Int64?]) {
        rowCount += 1
        guard id >= 0, id < Int64(heads.count), let head = heads[Int(id)] else {
            report("row \(token)/\(seq) belongs to stream \(id), which has no head")
            return
        }
        let stream = StreamName.all[Int(id)]
        if token > head { report("stream \(stream): row \(token)/\(seq) is after the head \(head)") }
        let shape = String(validating: row, as: UTF8.self).flatMap { try? JSONScanner.scan($0[...]) }
        if shape != .array(count: stream.fieldCount) {
            report("stream \(stream): row \(token)/\(seq) is not a JSON array of \(stream.fieldCount) fields")
        }
    }

    private mutating func report(_ problem: String) {
        if problems.count < Self.maxProblems {
            problems.append(problem)
        } else {
            unlistedProblems += 1
        }
    }
}
