import CSQLite

/// A failure of the SQLite library, with its message.
public struct SQLiteError: Error, Equatable, CustomStringConvertible {
    public var code: Int32
    public var message: String
    public var description: String { "\(message) (SQLite code \(code))" }
}

/// One SQLite connection, used by one thread at a time. Just what the log needs: statements with
/// integer and text parameters, stepped row by row.
final class SQLiteConnection {
    let handle: OpaquePointer

    enum Access { case readWrite, readWriteCreate, readOnly }

    init(path: String, access: Access) throws(SQLiteError) {
        var handle: OpaquePointer?
        let mode =
            switch access {
            case .readWrite: SQLITE_OPEN_READWRITE
            case .readWriteCreate: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
            case .readOnly: SQLITE_OPEN_READONLY
            }
        let flags = mode | SQLITE_OPEN_NOMUTEX
        let result = sqlite3_open_v2(path, &handle, flags, nil)
        guard result == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close(handle)
            throw SQLiteError(code: result, message: message)
        }
        self.handle = handle
        sqlite3_busy_timeout(handle, 5_000)
    }

    private var isClosed = false

    deinit { close() }

    /// Closes the connection; the last connection to close checkpoints the WAL into the database file
    /// and removes it. SQLite defers the close until statements still alive are finalized.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        statements = [:]  // finalized, so that the close is not deferred
        sqlite3_close_v2(handle)
    }

    /// Frames in the WAL after this connection's last commit, once it took over checkpoints.
    private(set) var walFrames: Int32 = 0

    /// Stops SQLite from checkpointing inside a `COMMIT` that finds the WAL past its threshold: the
    /// committer would answer no one for as long as the copy and its fsync take. The owner checkpoints
    /// when it chooses instead, from the count of frames each commit leaves in ``walFrames``.
    func takeOverCheckpoints() {
        sqlite3_wal_hook(
            handle,
            { connection, _, _, frames in
                Unmanaged<SQLiteConnection>.fromOpaque(connection!).takeUnretainedValue().walFrames = frames
                return SQLITE_OK
            }, Unmanaged.passUnretained(self).toOpaque())
    }

    func execute(_ sql: String) throws(SQLiteError) {
        let result = sqlite3_exec(handle, sql, nil, nil, nil)
        guard result == SQLITE_OK else { throw error(result) }
    }

    /// The connection's statements by their SQL: compiling one costs more than reading a catch-up page.
    private var statements: [String: Statement] = [:]

    /// The statement for `sql`, compiled once per connection; `bind` resets it for each use.
    func prepare(_ sql: String) throws(SQLiteError) -> Statement {
        if let cached = statements[sql] { return cached }
        var statement: OpaquePointer?
        let result = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard result == SQLITE_OK, let statement else { throw error(result) }
        let prepared = Statement(handle: statement, connection: self)
        statements[sql] = prepared
        return prepared
    }

    /// The first column of the first row of a query returning one integer.
    func integer(_ sql: String) throws(SQLiteError) -> Int64 {
        let statement = try prepare(sql)
        defer { statement.finish() }
        guard try statement.step() else { return 0 }
        return statement.integer(0)
    }

    func error(_ code: Int32) -> SQLiteError {
        SQLiteError(code: code, message: String(cString: sqlite3_errmsg(handle)))
    }

    final class Statement {
        let handle: OpaquePointer
        unowned let connection: SQLiteConnection

        init(handle: OpaquePointer, connection: SQLiteConnection) {
            self.handle = handle
            self.connection = connection
        }

        deinit { sqlite3_finalize(handle) }

        /// Resets the statement and binds parameters (1-based, in order).
        @discardableResult
        func bind(_ values: Value...) throws(SQLiteError) -> Statement {
            sqlite3_reset(handle)
            sqlite3_clear_bindings(handle)
            for (offset, value) in values.enumerated() {
                let index = Int32(offset + 1)
                let result: Int32
                switch value {
                case .integer(let integer): result = sqlite3_bind_int64(handle, index, integer)
                case .text(let text):
                    result = text.utf8.withContiguousStorageIfAvailable {
                        $0.withMemoryRebound(to: CChar.self) { rs_sqlite_bind_text(handle, index, $0.baseAddress, Int32($0.count)) }
                    } ?? rs_sqlite_bind_text(handle, index, text, -1)
                case .utf8(let bytes):
                    result = bytes.withMemoryRebound(to: CChar.self) {
                        rs_sqlite_bind_text(handle, index, $0.baseAddress, Int32($0.count))
                    }
                case .blob(let bytes):
                    // A null pointer would bind NULL, not an empty blob.
                    let start = bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1)
                    result = rs_sqlite_bind_blob_in_place(handle, index, start, Int32(bytes.count))
                }
                guard result == SQLITE_OK else { throw connection.error(result) }
            }
            return self
        }

        /// Steps once: true while a row is available.
        func step() throws(SQLiteError) -> Bool {
            let result = sqlite3_step(handle)
            switch result {
            case SQLITE_ROW: return true
            case SQLITE_DONE: return false
            default: throw connection.error(result)
            }
        }

        /// Runs a statement that returns no rows.
        func run() throws(SQLiteError) {
            while try step() {}
        }

        /// Ends the current execution, so that the transaction it ran in can commit.
        func finish() { sqlite3_reset(handle) }

        func integer(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
        func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }

        /// The blob column's bytes (valid until the next step).
        func blobBytes(_ column: Int32) -> UnsafeRawBufferPointer {
            guard let pointer = sqlite3_column_blob(handle, column) else { return UnsafeRawBufferPointer(start: nil, count: 0) }
            return UnsafeRawBufferPointer(start: pointer, count: Int(sqlite3_column_bytes(handle, column)))
        }

        /// The text column as raw bytes (valid until the next step).
        func textBytes(_ column: Int32) -> UnsafeRawBufferPointer {
            guard let pointer = sqlite3_column_text(handle, column) else { return UnsafeRawBufferPointer(start: nil, count: 0) }
            return UnsafeRawBufferPointer(start: pointer, count: Int(sqlite3_column_bytes(handle, column)))
        }
    }

    enum Value {
        case integer(Int64)
        case text(String)
        /// Text given as UTF-8 bytes (copied by SQLite while binding).
        case utf8(UnsafeRawBufferPointer)
        /// A blob read in place, not copied (a chunk is a quarter of a MiB): bind and run the statement
        /// while the bytes are alive; the next bind replaces it.
        case blob(UnsafeRawBufferPointer)
    }
}
