import CSQLite
import ReplicationCore

#if canImport(Glibc)
    import Glibc
#endif

/// The stream log of a data directory looked at, or repaired, apart from any server
/// (`replication-sidecar admin`).
public enum StreamLogAdmin {
    /// One stream as the log holds it.
    public struct StreamState: Equatable, Sendable {
        public var stream: StreamName
        /// The stream's current token: the next writer's token must be greater.
        public var head: Int64
        /// The oldest token a reader may catch up from.
        public var oldestServable: Int64
        /// Rows the log holds for it.
        public var rows: Int
    }

    /// What ``setHead(directory:stream:to:)`` did.
    public struct HeadMoved: Equatable, Sendable {
        public var previousHead: Int64
        public var rowsRemoved: Int
    }

    public struct AdminError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Every stream this build knows, with its head and row count (a stream never written is at 0).
    /// Read-only: safe beside a running server.
    public static func streams(directory: String) throws(AdminError) -> [StreamState] {
        let path = try existingLog(in: directory)
        do {
            let connection = try SQLiteConnection(path: path, access: .readOnly)
            try checkSchema(connection, path: path)
            var states = StreamName.all.map { StreamState(stream: $0, head: 0, oldestServable: 0, rows: 0) }
            let heads = try connection.prepare("SELECT id, current_token, oldest_servable FROM streams")
            while try heads.step() {
                let id = Int(heads.integer(0))
                guard states.indices.contains(id) else { continue }
                states[id].head = heads.integer(1)
                states[id].oldestServable = heads.integer(2)
            }
            let rows = try connection.prepare("SELECT stream, sum(row_count) FROM chunks GROUP BY stream")
            while try rows.step() {
                let id = Int(rows.integer(0))
                if states.indices.contains(id) { states[id].rows = Int(rows.integer(1)) }
            }
            return states
        } catch let error as AdminError {
            throw error
        } catch {
            throw AdminError(description: "cannot read \(path): \(error)")
        }
    }

    /// Moves `stream`'s head back to `token` and removes its rows after it, so that a writer can go on
    /// from there. Only with no server using the log: a connection that has the database open (a running
    /// server, or `check`) holds a lock that makes this refuse rather than wait.
    public static func setHead(
        directory: String, stream: StreamName, to token: Int64
    ) throws(AdminError) -> HeadMoved {
        guard token >= 0 else { throw AdminError(description: "the token must be 0 or more, got \(token)") }
        let path = try existingLog(in: directory)
        do {
            let connection = try SQLiteConnection(path: path, access: .readWrite)
            try lockExclusively(connection, path: path)
            try checkSchema(connection, path: path)
            let heads = try connection.prepare("SELECT current_token, oldest_servable FROM streams WHERE id = ?")
                .bind(.integer(Int64(stream.index)))
            let (current, oldest) = try heads.step() ? (heads.integer(0), heads.integer(1)) : (0, 0)
            heads.finish()
            guard token <= current else {
                try connection.execute("ROLLBACK")
                throw AdminError(
                    description:
                        "stream \(stream) is at \(current): set-head only moves a head back, to \(current) or less")
            }
            let removed = try LogChunks.removeRows(connection, stream: stream, after: token)
            // A reader from before the token has rows removed ahead of it: it has fallen behind.
            try connection.prepare("UPDATE streams SET current_token = ?, oldest_servable = ? WHERE id = ?")
                .bind(.integer(token), .integer(min(oldest, token)), .integer(Int64(stream.index))).run()
            try connection.execute("COMMIT")
            connection.close()
            return HeadMoved(previousHead: current, rowsRemoved: removed)
        } catch let error as AdminError {
            throw error
        } catch {
            throw AdminError(description: "cannot change \(path): \(error); nothing was changed")
        }
    }

    /// Begins a transaction no other connection can share, or says the log is in use. Exclusive from the
    /// first access, the lock is taken on the database file itself, which every other connection (in WAL
    /// mode) holds shared for as long as it has the file open.
    private static func lockExclusively(_ connection: SQLiteConnection, path: String) throws {
        try connection.execute("PRAGMA busy_timeout = 0; PRAGMA locking_mode = EXCLUSIVE")
        let result = sqlite3_exec(connection.handle, "BEGIN EXCLUSIVE", nil, nil, nil)
        guard result != SQLITE_BUSY else {
            throw AdminError(
                description:
                    "\(path) is in use (a running server, or `check`): stop the server, then run set-head again")
        }
        guard result == SQLITE_OK else { throw connection.error(result) }
    }

    private static func existingLog(in directory: String) throws(AdminError) -> String {
        let path = SQLiteStreamLog.databasePath(in: directory)
        guard access(path, F_OK) == 0 else { throw AdminError(description: "there is no stream log at \(path)") }
        return path
    }

    /// This project's database, in the schema of this build: one of an older build is migrated by `serve`.
    private static func checkSchema(_ connection: SQLiteConnection, path: String) throws {
        if let problem = try SQLiteStreamLog.unreadableSchema(connection, path: path) {
            throw AdminError(description: problem)
        }
        let version = Int(try connection.integer("PRAGMA user_version"))
        guard version == SQLiteStreamLog.schemaVersion else {
            throw AdminError(
                description: "\(path) has schema version \(version), from an older build: "
                    + "start `serve` on it once to migrate it")
        }
    }
}
