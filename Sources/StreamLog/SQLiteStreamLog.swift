import CSQLite
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ReplicationCore

#if canImport(Glibc)
    import Glibc
#endif

/// The durable stream log: one SQLite database (WAL mode) in the data directory.
///
/// Appends are validated at once (tokens strictly increasing), then written by one commit loop that
/// commits everything queued in one transaction (group commit: one fsync for many batches under load).
/// A batch's future succeeds only after its transaction committed, so an acknowledged row is durable
/// under the chosen sync mode, and a batch is stored whole or not at all. Readers use their own
/// connections and see a consistent snapshot per page.
///
/// Commits and page reads run on thread pools given by the owner, never on an event loop: a reader
/// connection is used by one thread of `readPool` at a time, so there are at most as many as it has
/// threads; commits get a pool of their own (`commitPool`) so that long page reads never delay an
/// acknowledgement. The log starts no thread of its own; ``close()`` waits for what it was given.
public final class SQLiteStreamLog: StreamLog, @unchecked Sendable {
    /// How hard a commit insists on reaching the disk.
    public enum SyncMode: String, Sendable, CaseIterable {
        /// fsync at every commit: an acknowledged row survives power loss.
        case full
        /// no fsync at commit in WAL mode: an acknowledged row survives a crash of the process, not of the machine.
        case normal
    }

    /// What the log keeps: a row is pruned only when it is beyond the newest `rows` of its stream *and*
    /// older than `ageMillis` (a `nil` bound does not hold rows back).
    public struct Retention: Sendable, Equatable {
        public var rows: Int?
        public var ageMillis: Int64?
        public init(rows: Int?, ageMillis: Int64?) {
            self.rows = rows
            self.ageMillis = ageMillis
        }
    }

    public struct OpenError: Error, CustomStringConvertible {
        public var description: String
    }

    static let applicationID: Int64 = 0x5253_4C47  // "RSLG"
    /// Schema migrations, in order: the one at index `n` takes a database from version `n` to `n + 1`.
    static let migrations: [@Sendable (SQLiteConnection) throws -> Void] = [
        { try $0.execute(rowsSchema) },
        // Version 2 stores chunks of lines instead of a table row per stream row (``LogChunks``).
        { try LogChunks.migrate(fromRows: $0) },
    ]

    /// Version 1: a table row per stream row. Kept because every database starts here and because a
    /// database written by an older build is migrated from it.
    static let rowsSchema = """
        CREATE TABLE streams (
            id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            current_token INTEGER NOT NULL, oldest_servable INTEGER NOT NULL);
        CREATE TABLE rows (
            stream INTEGER NOT NULL, token INTEGER NOT NULL, seq INTEGER NOT NULL,
            appended_at INTEGER NOT NULL, row TEXT NOT NULL,
            PRIMARY KEY (stream, token, seq)) WITHOUT ROWID;
        """
    public static var schemaVersion: Int { migrations.count }

    /// The page size of a new database.
    package static let pageSize = 16384

    private struct Pending {
        var batch: NewBatch
        /// The stream's token once the batch is stored.
        var token: Int64
        /// On the last accepted batch of an append: what to answer once it is durable.
        var completion: Completion?
    }

    /// One append's answer: the outcome of each of its batches, known when they were queued.
    private struct Completion {
        var promise: EventLoopPromise<AppendResults>
        var results: AppendResults
        var stored: (@Sendable (AppendResults) -> Void)?
    }

    private struct WriterState {
        /// Per stream: the token of the last batch accepted (durable or queued): new tokens must exceed it.
        var accepted: [Int64]
        var queue: [Pending] = []
        /// One commit loop runs at a time, on a pool thread: what makes group commit serial.
        var committing = false
        /// Waiting for the commit loop to be idle (``quiesce(on:)``, ``close()``).
        var idleWaiters: [EventLoopPromise<Void>] = []
        var closed = false
    }

    private struct Heads {
        /// Per stream: the last durable token, and the oldest token a reader may start after.
        var current: [Int64]
        var oldestServable: [Int64]
    }

    public let path: String
    private let retention: Retention
    private let clock: @Sendable () -> Int64
    private let writerConnection: SQLiteConnection
    private let commitPool: NIOThreadPool
    private let readPool: NIOThreadPool
    private let writerState: NIOLockedValueBox<WriterState>
    private let heads: NIOLockedValueBox<Heads>
    private let readers = NIOLockedValueBox<[SQLiteConnection]>([])
    /// Sixteen full chunks. Subscribers catching up together mostly stay that close and read each chunk
    /// from SQLite once; one further behind reads its chunks again, which costs less than keeping a larger
    /// cache resident (the budgets measured are in BENCHMARKS.md).
    private let chunkCache = ChunkCache(budgetBytes: 4 << 20)
    private var lastMaintenanceMillis: Int64 = 0  // commit loop only
    /// Per stream: chunks up to this token are as compact as they will get (commit loop only).
    private var compactedThrough = [Int64](repeating: 0, count: StreamName.all.count)

    /// Opens (or creates) the log in `directory`. Refuses a file that is not this project's database or
    /// that has a newer schema, and never overwrites anything it does not recognise. Commits and reads
    /// run on `commitPool` and `readPool` (they may be the same), which must run while the log is used.
    public init(
        directory: String, sync: SyncMode = .full, retention: Retention = Retention(rows: 1_000_000, ageMillis: nil),
        commitPool: NIOThreadPool = .singleton, readPool: NIOThreadPool = .singleton,
        clock: @escaping @Sendable () -> Int64
    ) throws(OpenError) {
        try Self.createDirectory(directory)
        path = Self.databasePath(in: directory)
        self.retention = retention
        self.commitPool = commitPool
        self.readPool = readPool
        self.clock = clock
        do {
            writerConnection = try SQLiteConnection(path: path, access: .readWriteCreate)
            try Self.prepareSchema(writerConnection, path: path)
            try writerConnection.execute("PRAGMA synchronous = \(sync == .full ? "FULL" : "NORMAL")")
            writerConnection.takeOverCheckpoints()
            // Proves the file can be written before any worker connects.
            try writerConnection.execute("BEGIN IMMEDIATE; COMMIT")
        } catch let error as OpenError {
            throw error
        } catch let error as SQLiteError {
            throw OpenError(description: "cannot use the stream log \(path): \(error.message)")
        } catch {
            throw OpenError(description: "cannot use the stream log \(path): \(error)")
        }
        var current = [Int64](repeating: 0, count: StreamName.all.count)
        var oldest = current
        do {
            let statement = try writerConnection.prepare("SELECT id, name, current_token, oldest_servable FROM streams")
            while try statement.step() {
                let id = Int(statement.integer(0))
                let name = String(decoding: statement.textBytes(1), as: UTF8.self)
                guard id < StreamName.all.count, StreamName.all[id].rawValue == name else {
                    throw OpenError(description: "\(path) names stream \(id) '\(name)', which this build does not know")
                }
                current[id] = statement.integer(2)
                oldest[id] = statement.integer(3)
            }
        } catch let error as OpenError {
            throw error
        } catch {
            throw OpenError(description: "cannot read the stream log \(path): \(error)")
        }
        writerState = NIOLockedValueBox(WriterState(accepted: current))
        heads = NIOLockedValueBox(Heads(current: current, oldestServable: oldest))
    }

    private static func createDirectory(_ directory: String) throws(OpenError) {
        var prefix = directory.hasPrefix("/") ? "" : "."
        for component in directory.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, 0o750) != 0 && errno != EEXIST {
                throw OpenError(
                    description: "cannot create the data directory \(directory): \(String(cString: strerror(errno)))")
            }
        }
        var info = stat()
        guard stat(directory, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw OpenError(description: "cannot use the data directory \(directory): it is not a directory")
        }
        guard access(directory, W_OK) == 0 else {
            throw OpenError(description: "the data directory \(directory) is not writable")
        }
    }

    /// The log's database in a data directory.
    static func databasePath(in directory: String) -> String { directory + "/stream-log.sqlite3" }

    /// Why an existing database is not a log this build can read, for the tools that look at one apart
    /// from a server (`check`, `admin`) and never migrate it: another program's file, or a newer schema.
    static func unreadableSchema(_ connection: SQLiteConnection, path: String) throws(SQLiteError) -> String? {
        guard try connection.integer("PRAGMA application_id") == applicationID else {
            return "\(path) is not a replication-sidecar stream log"
        }
        let version = Int(try connection.integer("PRAGMA user_version"))
        guard version <= schemaVersion else {
            return "\(path) has schema version \(version), newer than this build (\(schemaVersion))"
        }
        return nil
    }

    private static func prepareSchema(_ connection: SQLiteConnection, path: String) throws {
        let applicationID: Int64
        do {
            applicationID = try connection.integer("PRAGMA application_id")
        } catch {
            throw OpenError(
                description: "\(path) is not a replication-sidecar stream log (\(error.message)); it was left untouched"
            )
        }
        let version = Int(try connection.integer("PRAGMA user_version"))
        let objects = try connection.integer("SELECT count(*) FROM sqlite_master")
        guard applicationID == Self.applicationID || (applicationID == 0 && objects == 0) else {
            throw OpenError(description: "\(path) is not a replication-sidecar stream log; it was left untouched")
        }
        guard version <= schemaVersion else {
            throw OpenError(
                description:
                    "\(path) has schema version \(version), newer than this build supports (\(schemaVersion)); "
                    + "run a newer replication-sidecar")
        }
        if objects == 0 {
            // Before anything is written: a chunk of catch-up lines spans a quarter as many pages.
            try connection.execute("PRAGMA page_size = \(pageSize)")
        }
        let mode = try connection.prepare("PRAGMA journal_mode = WAL")
        guard try mode.step(), String(decoding: mode.textBytes(0), as: UTF8.self) == "wal" else {
            throw OpenError(description: "\(path): WAL mode is not available")
        }
        mode.finish()
        for next in version..<schemaVersion {
            try connection.execute("BEGIN IMMEDIATE")
            do {
                try migrations[next](connection)
                try connection.execute(
                    "PRAGMA user_version = \(next + 1); PRAGMA application_id = \(Self.applicationID); COMMIT")
            } catch {
                try? connection.execute("ROLLBACK")
                throw OpenError(
                    description: "cannot migrate \(path) to schema version \(next + 1): \(error); it was left as it was"
                )
            }
        }
    }

    // MARK: StreamLog

    public func currentToken(of stream: StreamName) -> Int64 {
        heads.withLockedValue { $0.current[stream.index] }
    }

    public func append(_ batches: [NewBatch], on eventLoop: any EventLoop) -> EventLoopFuture<AppendResults> {
        append(batches, on: eventLoop, stored: nil)
    }

    public func append(
        _ batches: [NewBatch], on eventLoop: any EventLoop,
        whenStored stored: @escaping @Sendable (AppendResults) -> Void
    ) -> EventLoopFuture<AppendResults> {
        append(batches, on: eventLoop, stored: .some(stored))
    }

    private func append(
        _ batches: [NewBatch], on eventLoop: any EventLoop, stored: (@Sendable (AppendResults) -> Void)?
    ) -> EventLoopFuture<AppendResults> {
        let promise = eventLoop.makePromise(of: AppendResults.self)
        let startCommit = writerState.withLockedValue { state -> Bool in
            guard !state.closed else {
                promise.succeed(batches.prefix(1).map { _ in .failure(.storage("the stream log is closed")) })
                return false
            }
            var results: AppendResults = []
            var lastQueued: Int?
            appending: for batch in batches {
                let previous = state.accepted[batch.stream.index]
                let newToken: Int64
                switch batch.tokenAfterAppend(to: previous) {
                case .success(let token): newToken = token
                case .failure(let refusal):
                    results.append(.failure(refusal))
                    break appending
                }
                state.accepted[batch.stream.index] = newToken
                results.append(
                    .success(
                        AppendedBatch(
                            stream: batch.stream, previousToken: previous, token: newToken, rowCount: batch.rowCount,
                            liveLines: batch.liveLines(token: newToken))))
                state.queue.append(Pending(batch: batch, token: newToken, completion: nil))
                lastQueued = state.queue.count - 1
            }
            guard let lastQueued else {
                promise.succeed(results)  // all refused: nothing to store
                return false
            }
            state.queue[lastQueued].completion = Completion(promise: promise, results: results, stored: stored)
            defer { state.committing = true }
            return !state.committing
        }
        if startCommit {
            commitPool.submit { _ in self.commitQueued() }
        }
        return promise.futureResult
    }

    public func read(_ stream: StreamName, after token: Int64, maxBytes: Int, on eventLoop: any EventLoop)
        -> EventLoopFuture<LogPage>
    {
        readPool.runIfActive(eventLoop: eventLoop) { () throws(StreamLogError) in
            try self.read(stream, after: token, maxBytes: maxBytes)
        }
    }

    /// Reads a page on the calling thread (it blocks on SQLite: never call it on an event loop).
    package func read(_ stream: StreamName, after token: Int64, maxBytes: Int) throws(StreamLogError) -> LogPage {
        let connection: SQLiteConnection
        do {
            connection =
                try readers.withLockedValue { $0.popLast() } ?? openReader()
        } catch {
            throw .storage("\(error)")
        }
        defer {
            // A read that finishes after close() closes its connection rather than pooling it.
            if writerState.withLockedValue({ $0.closed }) {
                connection.close()
            } else {
                readers.withLockedValue { $0.append(connection) }
            }
        }
        do {
            try connection.execute("BEGIN")
            defer { try? connection.execute("COMMIT") }
            return try LogChunks.readPage(
                connection, stream: stream, after: token, maxBytes: maxBytes, cache: chunkCache)
        } catch let error as StreamLogError {
            throw error
        } catch {
            throw .storage("\(error)")
        }
    }

    /// A reader connection with a page cache of 64 KiB instead of SQLite's 2 MiB: the overflow pages of a
    /// chunk's lines are read on a chunk cache miss and rarely again, yet they filled the page cache (3-6
    /// MiB less at the peak of a catch-up with two readers, for about the same CPU).
    private func openReader() throws(SQLiteError) -> SQLiteConnection {
        let connection = try SQLiteConnection(path: path, access: .readWrite)
        try connection.execute("PRAGMA cache_size = -64")
        return connection
    }

    /// Completes once everything appended before (commits and pruning) is done.
    package func quiesce(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        let idle = writerState.withLockedValue { state in
            if !state.committing { return true }
            state.idleWaiters.append(promise)
            return false
        }
        if idle { promise.succeed() }
        return promise.futureResult
    }

    /// Refuses further appends and completes once everything appended before is committed, the WAL is
    /// checkpointed into the database and every connection is closed, so that a clean shutdown leaves the
    /// log as one file. Called after the listener has stopped, so that no acknowledged row is left behind.
    public func close() async {
        writerState.withLockedValue { $0.closed = true }
        try? await quiesce(on: MultiThreadedEventLoopGroup.singleton.next()).get()
        readers.withLockedValue { readers in
            for reader in readers { reader.close() }
            readers = []
        }
        try? writerConnection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        writerConnection.close()
    }

    // MARK: The commit loop

    /// Commits everything queued, round after round, until the queue is empty.
    private func commitQueued() {
        while true {
            let (round, idleWaiters) = writerState.withLockedValue { state -> ([Pending], [EventLoopPromise<Void>]) in
                let round = state.queue
                state.queue = []
                guard round.isEmpty else { return (round, []) }
                state.committing = false
                defer { state.idleWaiters = [] }
                return (round, state.idleWaiters)
            }
            guard !round.isEmpty else {
                for waiter in idleWaiters { waiter.succeed() }
                return
            }
            do {
                try commit(round)
                heads.withLockedValue { heads in
                    for pending in round {
                        heads.current[pending.batch.stream.index] = pending.token
                        if pending.batch.forgetsEarlier {
                            heads.oldestServable[pending.batch.stream.index] = pending.token
                        }
                    }
                }
                for completion in round.compactMap(\.completion) {
                    completion.stored?(completion.results)
                    completion.promise.succeed(completion.results)
                }
                checkpointIfDue()
            } catch {
                try? writerConnection.execute("ROLLBACK")
                let durable = heads.withLockedValue { $0.current }
                writerState.withLockedValue { state in
                    for pending in round where state.accepted[pending.batch.stream.index] == pending.token {
                        state.accepted[pending.batch.stream.index] = durable[pending.batch.stream.index]
                    }
                }
                for completion in round.compactMap(\.completion) {
                    completion.promise.succeed(
                        completion.results.map { $0.flatMap { _ in .failure(.storage("\(error)")) } })
                }
            }
            maintainIfDue()
        }
    }

    private func commit(_ round: [Pending]) throws(SQLiteError) {
        let now = clock()
        try writerConnection.execute("BEGIN IMMEDIATE")
        var chunks = try ChunkWriter(writerConnection)
        let head = try writerConnection.prepare(
            """
            INSERT INTO streams (id, name, current_token, oldest_servable) VALUES (?, ?, ?, 0)
            ON CONFLICT (id) DO UPDATE SET current_token = excluded.current_token
            """)
        for pending in round {
            let stream = Int64(pending.batch.stream.index)
            try chunks.append(pending.batch, storedAt: pending.token, appendedAt: now)
            try head.bind(.integer(stream), .text(pending.batch.stream.rawValue), .integer(pending.token)).run()
            if pending.batch.forgetsEarlier {
                // Rows of this round before it are in an open chunk: stored first, so that they go too.
                try chunks.finish()
                try LogChunks.drop(writerConnection, stream: pending.batch.stream, through: pending.token - 1)
                try writerConnection.prepare("UPDATE streams SET oldest_servable = ? WHERE id = ?")
                    .bind(.integer(pending.token), .integer(stream)).run()
            }
        }
        try chunks.finish()
        try writerConnection.execute("COMMIT")
    }

    /// WAL frames after which the commit loop copies the WAL into the database (SQLite's own threshold).
    package static let checkpointFrames: Int32 = 1_000

    /// Checkpoints once the WAL has grown past ``checkpointFrames``, after the round's rows went to the
    /// fan-out and its writers were answered, so that the copy and its fsync delay no committed row. No
    /// commit runs meanwhile (this is the commit loop): the next one starts the WAL over, unless a reader
    /// still reads from it; `PASSIVE` never waits for readers.
    private func checkpointIfDue() {
        guard writerConnection.walFrames >= Self.checkpointFrames else { return }
        try? writerConnection.execute("PRAGMA wal_checkpoint(PASSIVE)")
    }

    /// At most once a second, in small transactions of their own: merges the small chunks a light load
    /// leaves (one per commit) into full ones, then drops chunks beyond the retention.
    private func maintainIfDue() {
        let now = clock()
        guard now - lastMaintenanceMillis >= 1_000 else { return }
        lastMaintenanceMillis = now
        for stream in StreamName.all {
            do {
                // Merged chunks hold at most a sixteenth of the rows retention keeps.
                compactedThrough[stream.index] = try LogChunks.compact(
                    writerConnection, stream: stream, after: compactedThrough[stream.index],
                    maxRows: retention.rows.map { max(1, $0 / 16) } ?? Int.max)
                if retention.rows != nil || retention.ageMillis != nil { try prune(stream, now: now) }
            } catch {
                try? writerConnection.execute("ROLLBACK")
            }
        }
    }

    private func prune(_ stream: StreamName, now: Int64) throws(SQLiteError) {
        guard
            let pruneThrough = try LogChunks.prunableThrough(
                writerConnection, stream: stream, keepRows: retention.rows,
                appendedBefore: retention.ageMillis.map { now - $0 } ?? Int64.max)
        else { return }
        try writerConnection.execute("BEGIN IMMEDIATE")
        try LogChunks.drop(writerConnection, stream: stream, through: pruneThrough)
        try writerConnection.prepare("UPDATE streams SET oldest_servable = ? WHERE id = ?")
            .bind(.integer(pruneThrough), .integer(Int64(stream.index))).run()
        try writerConnection.execute("COMMIT")
        heads.withLockedValue { $0.oldestServable[stream.index] = pruneThrough }
    }
}
