import Logging
import NIOConcurrencyHelpers
import NIOCore
import RedisClient
import ReplicationCore
import ReplicationNIO
import StreamLog

/// Everything ``RedisSharedStreams`` is started with.
public struct RedisStreamsConfiguration: Sendable {
    public var endpoint: RedisEndpoint
    public var entries: StreamEntries
    /// How long a publish waits for Redis to be reachable before its writer is refused.
    public var writeTimeout: TimeAmount
    /// Rows kept per key at least (``TrimScript``), from `--retain-rows`, in whole entries.
    public var keepRows: Int
    /// Entries younger than this are kept too, from `--retain-age`.
    public var keepAge: TimeAmount?
    /// How often the keys are trimmed, and at most how many entries per key each time.
    public var trimInterval = TimeAmount.seconds(1)
    public var trimBatch = 1_000
    /// Entries one `XRANGE` of a catch-up older than the local log returns at most.
    public var backfillCount = 1_000
    /// Replicas that must have a publish (`WAIT`) before its writer is acknowledged; 0 does not wait.
    public var waitReplicas = 0
    /// Entries one `XREAD` returns at most (a run entry holds up to ``StreamEntries/runEntryBytes`` of rows
    /// and its last line).
    public var readCount = 256
    /// How long one `XREAD` blocks (below the client's command timeout).
    public var blockMillis = 2_000

    public init(endpoint: RedisEndpoint, entries: StreamEntries, writeTimeout: TimeAmount, keepRows: Int) {
        self.endpoint = endpoint
        self.entries = entries
        self.writeTimeout = writeTimeout
        self.keepRows = keepRows
    }
}

/// What the shared streams have done, for metrics.
public struct RedisStreamsStatistics: Sendable, Equatable {
    public var commands = RedisConnectionStatistics()
    public var follower = RedisConnectionStatistics()
    public var entriesWritten = [Int](repeating: 0, count: StreamName.all.count)
    public var entriesRead = [Int](repeating: 0, count: StreamName.all.count)
    public var entriesTrimmed = [Int](repeating: 0, count: StreamName.all.count)
    /// Pages of catch-up older than the local log read from Redis, by result: `ok`, `fallen_behind`, `failed`.
    public var backfills: [String: Int] = [:]
    /// The last token Redis holds per stream, as last seen, and the one this hub has stored.
    public var redisTokens = [Int64](repeating: 0, count: StreamName.all.count)
    /// Publishes refused, by why: `token_taken`, `unavailable`, `diverged`, `not_replicated`, `failed`.
    public var refusedWrites: [String: Int] = [:]
    /// Append transactions that added nothing, since a key was not as this hub expected (``AppendTransaction``).
    public var abortedTransactions = 0
    /// Errors by kind: `read`, `entry`, `store`, `script`.
    public var errors: [String: Int] = [:]
    /// Streams whose Redis key is behind what this hub stored (Redis lost data): writes are refused.
    public var divergedStreams: [StreamName] = []
    /// Append script answers per bucket of `bucketBounds` (seconds), then those slower than all.
    public var commandCounts: [Int]
    public var commandSecondsSum = 0.0
    public let bucketBounds: [Double]

    /// Both connections to Redis are up: without the command connection no write is stored, without the
    /// follower no new row reaches this hub's workers.
    public var isConnected: Bool { commands.connected && follower.connected }

    public init(bucketBounds: [Double]) {
        self.bucketBounds = bucketBounds
        commandCounts = Array(repeating: 0, count: bucketBounds.count + 1)
    }

    /// Redis holds `token` of `stream`, as read or written.
    mutating func sawRedisToken(_ token: Int64, of stream: StreamName) {
        redisTokens[stream.index] = max(redisTokens[stream.index], token)
    }

    mutating func recordCommand(sentAt sent: NIODeadline) {
        let seconds = Double((NIODeadline.now() - sent).nanoseconds) / 1e9
        commandSecondsSum += seconds
        commandCounts[bucketBounds.firstIndex { seconds <= $0 } ?? bucketBounds.count] += 1
    }
}

/// A hub's streams kept in Redis, shared with the hubs of other hosts with the same prefix: publishes are
/// added by a transaction (``AppendTransaction``) or one Lua script (``AppendScript``), and everything in
/// Redis is read with `XREAD BLOCK` from the tokens this hub's log has stored, and stored through
/// ``ReplicationHub/store(_:on:)``; a transaction's own entries are stored as it answers, when the log ends
/// where the key did before them, and are not read back. A publish is acknowledged once its entries are
/// stored locally. Two Redis connections: `XREAD BLOCK` holds one. Confined to one event loop.
public final class RedisSharedStreams: SharedStreams, @unchecked Sendable {  // state confined to `eventLoop`
    public let eventLoop: any EventLoop
    private let configuration: RedisStreamsConfiguration
    private let logger: Logger
    private var commands: RedisClient!
    private var follower: RedisClient!
    private var commandEvents: ClientEvents!
    private var followerEvents: ClientEvents!
    private var hub: ReplicationHub?
    /// The SHA-1 of each script (by its source) that Redis has loaded (``LuaScript``).
    private var scriptSHAs: [String: String] = [:]
    private static let scripts = [AppendScript.source, TrimScript.source, BackfillScript.source]
    private var reading = false
    /// The last `XREAD` returned as many entries as it asks for, of some stream: more are waiting, and the
    /// follower reads on (without `BLOCK`) even while a transaction is in flight.
    private var readAFullCount = false
    /// Per stream, the ID of the last entry read that is not a batch (another program's).
    private var notBatches = [String?](repeating: nil, count: StreamName.all.count)
    /// The follower connection's `CLIENT ID`, to end its blocked `XREAD` when a transaction starts.
    private var followerID: Int64?
    /// Redis refused `CLIENT UNBLOCK` (an ACL, a managed service): the follower's read is left as it is.
    private var unblockRefused = false
    private var trimming = false
    private var trimTask: RepeatedTask?
    private var entryAges: EntryAges?
    /// Whether Redis was found to hold at least what this hub stored, since the follower last connected:
    /// until then nothing is written (a Redis that lost data must not take tokens again).
    private var verified = false
    private var stopped = false
    private var statistics: RedisStreamsStatistics
    private let published: NIOLockedValueBox<RedisStreamsStatistics>
    /// Each key's newest entry as this hub expects it (``AppendTransaction``); nil when not known: before it was
    /// checked, after an append script or a failed transaction.
    private var tips = [AppendTransaction.Tip?](repeating: nil, count: StreamName.all.count)
    /// Publishes sent to Redis in order, behind the transaction or check in flight (one at a time).
    private var appends: [Append] = []
    /// A transaction or a check is in flight.
    private var transacting = false
    /// A transaction's `MULTI` is open: its `EXEC` or `DISCARD` waits for its check's answer.
    private var multiOpen = false
    /// Commands waiting for the open `MULTI` to close (``outsideTransaction(_:)``).
    private var held: [() -> Void] = []
    /// Append script calls not answered yet: no transaction starts meanwhile.
    private var scriptsInFlight = 0
    /// An append script call was refused for want of the script: the calls after it, still in flight, will
    /// be too, and no other is sent before all have answered, so that they are sent again in order.
    private var reloadingScripts = false
    /// Publishes made so far, numbering them.
    private var appendsMade = 0
    /// Publishes waiting for the command connection, with the time they give up.
    private var queued: [(batches: [NewBatch], promise: EventLoopPromise<AppendResults>, deadline: NIODeadline)] = []
    /// Accepted entries waiting for the follower to store them, per stream and token.
    private var awaiting = [[Int64: EventLoopPromise<AppendedBatch>]](repeating: [:], count: StreamName.all.count)
    /// Entries of publishes whose answer (or store) is still awaited, counted per stream and token (nil: one
    /// whose token Redis picks): meanwhile, what the follower stores that may be one of them is kept in
    /// ``storedMeanwhile``, in case it stores an entry before the answer says whose it is.
    private var inFlight = [[Int64?: Int]](repeating: [:], count: StreamName.all.count)
    private var storedMeanwhile = [[Int64: AppendedBatch]](repeating: [:], count: StreamName.all.count)
    /// The last store into the hub's log (``inTurn(_:)``).
    private var lastStore: EventLoopFuture<Void>?

    /// `latencyBuckets`: upper bounds in seconds of the append script's latency histogram.
    public init(
        configuration: RedisStreamsConfiguration, eventLoop: any EventLoop, latencyBuckets: [Double], logger: Logger
    ) {
        statistics = RedisStreamsStatistics(bucketBounds: latencyBuckets)
        published = NIOLockedValueBox(statistics)
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.logger = logger
    }

    /// Connects and starts following; `hub` stores what is read.
    public func start(storingInto hub: ReplicationHub) {
        eventLoop.execute {
            self.hub = hub
            self.commandEvents = ClientEvents { [unowned self] connected in self.commandsConnected(connected) }
            self.followerEvents = ClientEvents { [unowned self] connected in self.followerConnected(connected) }
            // `WAIT` holds the connection up to the write timeout: the command timeout leaves room for it.
            self.commands = RedisClient(
                configuration: RedisClientConfiguration(
                    endpoint: self.configuration.endpoint, clientName: "replication-sidecar",
                    commandTimeout: self.configuration.writeTimeout + .seconds(5)),
                eventLoop: self.eventLoop, delegate: self.commandEvents, logger: self.logger)
            self.follower = RedisClient(
                configuration: RedisClientConfiguration(
                    endpoint: self.configuration.endpoint, clientName: "replication-sidecar-follower",
                    commandTimeout: .milliseconds(Int64(self.configuration.blockMillis) + 5_000)),
                eventLoop: self.eventLoop, delegate: self.followerEvents, logger: self.logger)
            self.commands.start()
            self.follower.start()
            self.entryAges = self.configuration.keepAge.map { EntryAges(ageMillis: $0.nanoseconds / 1_000_000) }
            let interval = self.configuration.trimInterval
            self.trimTask = self.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                self.trim()
            }
        }
    }

    public func stop() -> EventLoopFuture<Void> {
        eventLoop.submit {
            self.stopped = true
            self.trimTask?.cancel()
            self.commands?.stop()
            self.follower?.stop()
            for waiting in self.queued { waiting.promise.fail(RedisError.connectionClosed) }
            for append in self.appends { append.promise.fail(RedisError.connectionClosed) }
            self.appends.removeAll()
            self.queued.removeAll()
            for index in self.awaiting.indices {
                for waiting in self.awaiting[index].values { waiting.fail(RedisError.connectionClosed) }
                self.awaiting[index].removeAll()
            }
        }
    }

    /// A copy of the figures, from any thread.
    public var currentStatistics: RedisStreamsStatistics { published.withLockedValue { $0 } }

    private func publishStatistics() {
        statistics.commands = commands?.statistics ?? .init()
        statistics.follower = follower?.statistics ?? .init()
        published.withLockedValue { $0 = statistics }
    }

    // MARK: publishing

    public func publish(_ batches: [NewBatch], on eventLoop: any EventLoop) -> EventLoopFuture<AppendResults> {
        let promise = self.eventLoop.makePromise(of: AppendResults.self)
        self.eventLoop.execute {
            self.queued.append((batches, promise, .now() + self.configuration.writeTimeout))
            self.sendQueued()
            if !self.queued.isEmpty {
                self.eventLoop.scheduleTask(in: self.configuration.writeTimeout) { self.expireQueued() }
            }
        }
        return promise.futureResult.hop(to: eventLoop)
    }

    private func sendQueued() {
        guard let commands, commands.isReady, verified else { return }
        let sending = queued
        queued.removeAll()
        for waiting in sending { send(waiting.batches, promise: waiting.promise) }
    }

    private func expireQueued() {
        let now = NIODeadline.now()
        queued.removeAll { waiting in
            guard waiting.deadline <= now else { return false }
            refuse(waiting.promise, kind: "unavailable", "Redis unavailable: nothing of this batch was kept")
            return true
        }
        publishStatistics()
    }

    private func refuse(_ promise: EventLoopPromise<AppendResults>, kind: String, _ why: String) {
        statistics.refusedWrites[kind, default: 0] += 1
        publishStatistics()
        promise.succeed([.failure(.storage(why))])
    }

    /// One publish on its way to Redis.
    private struct Append {
        /// Its place among publishes: one sent again goes back to its place.
        var sequence: Int
        var batches: [NewBatch]
        var promise: EventLoopPromise<AppendResults>
        var additions: [StreamEntries.Addition]
        /// Entries of each batch, in order (a run is several).
        var entriesPerBatch: [Int]
        /// Transactions it was in that added nothing: after two, it goes through the append script.
        var aborted = 0
        /// Sent in a transaction: the token each key's newest entry had before this publish's first (nil for
        /// a key it does not add to). Sent through the script: nil.
        var follows: [Int64?]?

        /// Bytes of rows.
        var bytes: Int

        /// Whether it goes through ``AppendScript``: a row the hub makes itself takes its token there, and a
        /// small publish costs Redis less there than a transaction's commands and check.
        var needsScript: Bool {
            aborted >= 2 || bytes < AppendTransaction.minimumBytes || additions.contains { $0.token == nil }
        }
    }

    private func send(_ batches: [NewBatch], promise: EventLoopPromise<AppendResults>) {
        if !statistics.divergedStreams.isEmpty {
            let names = statistics.divergedStreams.map(\.rawValue).joined(separator: ", ")
            return refuse(
                promise, kind: "diverged",
                "Redis lost rows this sidecar stored (\(names)): writes refused until an operator acts")
        }
        let perBatch = Array(batches.lazy.map(StreamEntries.additions(of:)).prefix { $0 != nil }.map { $0! })
        let additions = perBatch.flatMap { $0 }
        guard !additions.isEmpty, hub != nil else { return promise.succeed([]) }
        appendsMade += 1
        appends.append(
            Append(
                sequence: appendsMade, batches: batches, promise: promise, additions: additions,
                entriesPerBatch: perBatch.map(\.count), bytes: additions.reduce(0) { $0 + $1.value.readableBytes }))
        sendAppends()
    }

    /// Puts publishes to send again back in their places.
    private func requeue(_ again: [Append]) {
        for var append in again {
            // Sent again, it may be added after entries its transaction's check did not see.
            append.follows = nil
            appends.insert(append, at: appends.firstIndex { $0.sequence > append.sequence } ?? appends.endIndex)
        }
    }

    /// Sends on once the event loop is free: a reply that failed at once (no connection) does not recurse.
    private func sendAppendsLater() { eventLoop.execute { self.sendAppends() } }

    /// Sends what waits in ``appends``, in order. Publishes in a row that ``AppendTransaction`` can add go as
    /// one transaction, once no script or transaction is in flight: a transaction and a script may add to the
    /// same key, and each must find the other's entries there. The others go through ``AppendScript``, once
    /// no transaction is in flight.
    private func sendAppends() {
        while !transacting, let head = appends.first {
            if head.needsScript {
                guard !reloadingScripts else { return }
                appends.removeFirst()
                sendScript(head)
                continue
            }
            guard scriptsInFlight == 0 else { return }
            let unknown = AppendTransaction.streams(of: head.additions).filter { tips[$0.index] == nil }
            if !unknown.isEmpty { return probe(unknown, for: head.sequence) }
            var following = tips
            var group: [Append] = []
            var planned: [AppendTransaction.Planned] = []
            var bytes = 0
            for var append in appends {
                let before = following
                guard !append.needsScript, group.isEmpty || bytes + append.bytes <= Self.transactionBytes,
                    let entries = AppendTransaction.plan(append.additions, after: &following)
                else { break }
                append.follows = StreamName.all.map { stream in
                    append.additions.contains { $0.stream == stream } ? before[stream.index]?.token : nil
                }
                group.append(append)
                planned += entries
                bytes += append.bytes
            }
            guard !group.isEmpty else {
                // A token of the first is taken: the script refuses it in Redis's words.
                appends.removeFirst()
                sendScript(head)
                continue
            }
            appends.removeFirst(group.count)
            sendTransaction(group, planned: planned, leaving: following)
        }
        if !transacting { resumeReading() }
    }

    /// Bytes of rows one transaction holds at most (at least one publish): Redis keeps a transaction's
    /// commands until `EXEC`.
    private static let transactionBytes = 8 << 20

    /// Learns the tips of keys the publish `sequence` adds to, then sends on.
    private func probe(_ streams: [StreamName], for sequence: Int) {
        transacting = true
        let command = AppendTransaction.probe(streams, entries: configuration.entries)
        commands.pipeline([command])[0].whenComplete { result in
            self.transacting = false
            let learned = (try? result.get()).map { AppendTransaction.tips($0, of: streams) } ?? [:]
            for stream in streams { self.tips[stream.index] = learned[stream] ?? nil }
            if case .failure(let error) = result {
                self.statistics.errors["script", default: 0] += 1
                self.logger.warning("checking the streams in Redis failed: \(error)")
            }
            // A key whose tip cannot be learned (not a stream, Redis unreachable) is left to the script.
            if streams.contains(where: { self.tips[$0.index] == nil }),
                let index = self.appends.firstIndex(where: { $0.sequence == sequence })
            {
                self.appends[index].aborted = 2
            }
            self.sendAppendsLater()
        }
    }

    /// Sends `group` as one transaction of `planned` entries, which leaves the keys at `leaving`. `EXEC` is
    /// sent only once the check has answered that every key is as expected (`DISCARD` otherwise): should the
    /// check not run at all (Redis busy with another script, out of memory), nothing is added unchecked.
    private func sendTransaction(
        _ group: [Append], planned: [AppendTransaction.Planned], leaving: [AppendTransaction.Tip?]
    ) {
        transacting = true
        multiOpen = true
        let additions = group.flatMap(\.additions)
        expect(additions)
        let streams = AppendTransaction.streams(of: additions)
        let expected = tips
        let sent = NIODeadline.now()
        pauseFollower()
        let queued = commands.pipeline(
            AppendTransaction.commands(additions, planned: planned, entries: configuration.entries))
        queued[1].whenComplete { checked in
            let found = (try? checked.get()).map { AppendTransaction.tips($0, of: streams) }
            let asExpected = AppendTransaction.asExpected(found, expected, of: streams)
            let replies = self.commands.pipeline(
                [AppendTransaction.ending(asExpected: asExpected)]
                    + (asExpected && self.configuration.waitReplicas > 0 ? [self.waitCommand] : []))
            self.multiOpen = false
            self.sendHeld()
            replies[0].whenComplete { result in
                self.transacting = false
                self.statistics.recordCommand(sentAt: sent)
                switch (asExpected, result) {
                case (true, .success(let reply)):
                    self.finish(
                        group, AppendTransaction.outcome(reply), found: found, leaving: leaving,
                        replicated: replies.count > 1 ? replies[1] : nil)
                case (false, _):
                    self.finish(group, .aborted, found: found, leaving: leaving, replicated: nil)
                case (true, .failure(let error)):
                    // EXEC refused (EXECABORT, or BUSY, which leaves MULTI open) added nothing; a lost connection
                    // may have added it all.
                    if case RedisError.server = error {
                        _ = self.commands.pipeline([AppendTransaction.ending(asExpected: false)])
                    }
                    self.forgetTips()
                    self.statistics.errors["script", default: 0] += 1
                    for append in group {
                        self.refuse(append.promise, kind: "failed", "Redis did not confirm the batch: \(error)")
                    }
                }
                self.settle(additions)
                self.publishStatistics()
                self.sendAppendsLater()
            }
        }
    }

    /// Answers a transaction's publishes, or puts them back to be sent again.
    private func finish(
        _ group: [Append], _ outcome: AppendTransaction.Outcome, found: [StreamName: AppendTransaction.Tip?]?,
        leaving: [AppendTransaction.Tip?], replicated: EventLoopFuture<RedisValue>?
    ) {
        switch outcome {
        case .aborted:
            for (stream, tip) in found ?? [:] { tips[stream.index] = tip }
            if found == nil { forgetTips() }
            statistics.abortedTransactions += 1
            requeue(group.map { var append = $0; append.aborted += 1; return append })
        case .added(let tokens):
            tips = leaving
            answer(group, tokens: tokens, refusal: nil, replicated: replicated)
        case .failed(let tokens, let message):
            forgetTips()
            statistics.errors["script", default: 0] += 1
            answer(group, tokens: tokens, refusal: message, replicated: replicated)
        }
    }

    /// No key is as this hub knows it any more: each is checked before a transaction adds to it.
    private func forgetTips() { tips = tips.map { _ in nil } }

    /// Commands other than a transaction's, held while its `MULTI` is open: sent then, they would be queued
    /// in it.
    private func outsideTransaction<Value>(_ body: @escaping () -> EventLoopFuture<Value>) -> EventLoopFuture<Value> {
        guard multiOpen else { return body() }
        let promise = eventLoop.makePromise(of: Value.self)
        held.append { body().cascade(to: promise) }
        return promise.futureResult
    }

    private func sendHeld() {
        let sending = held
        held.removeAll()
        for body in sending { body() }
    }

    /// Answers each publish of a transaction from the tokens `EXEC` added, in order: a publish not added whole
    /// is refused with `refusal`, and so is every one after it.
    private func answer(
        _ group: [Append], tokens: [Int64], refusal: String?, replicated: EventLoopFuture<RedisValue>?
    ) {
        var next = 0
        for append in group {
            let added = Array(tokens[min(next, tokens.count)..<min(next + append.additions.count, tokens.count)])
            next += append.additions.count
            guard added.count == append.additions.count else {
                refuse(append.promise, kind: "failed", "Redis refused the batch: \(refusal ?? "nothing added")")
                continue
            }
            answer(append, AppendScript.Reply(added: added), replicated: replicated)
        }
    }

    private var waitCommand: [ByteBuffer] {
        RESPCommand.arguments([
            "WAIT", "\(configuration.waitReplicas)", "\(configuration.writeTimeout.nanoseconds / 1_000_000)",
        ])
    }

    /// Sends a publish through ``AppendScript``; the keys it adds to are no longer as this hub expects.
    private func sendScript(_ append: Append) {
        guard let hub else { return }
        let floors = StreamName.all.map { hub.log.currentToken(of: $0) }
        expect(append.additions)
        for addition in append.additions { tips[addition.stream.index] = nil }
        let command = AppendScript.arguments(
            sha: scriptSHAs[AppendScript.source], append.additions, entries: configuration.entries, floors: floors)
        let sent = NIODeadline.now()
        scriptsInFlight += 1
        let replies = commands.pipeline([command] + (configuration.waitReplicas > 0 ? [waitCommand] : []))
        replies[0].whenComplete { result in
            self.statistics.recordCommand(sentAt: sent)
            self.scriptsInFlight -= 1
            if case .failure(let error) = result, LuaScript.isNotLoaded(error) { self.reloadingScripts = true }
            if self.scriptsInFlight == 0 { self.reloadingScripts = false }
            defer {
                self.settle(append.additions)
                self.sendAppendsLater()
            }
            switch result {
            case .failure(let error) where LuaScript.isNotLoaded(error):
                self.scriptsLost()
                self.requeue([append])
            case .failure(let error):
                self.statistics.errors["script", default: 0] += 1
                self.refuse(append.promise, kind: "failed", "Redis did not confirm the batch: \(error)")
            case .success(let value):
                guard let reply = AppendScript.reply(value) else {
                    self.statistics.errors["script", default: 0] += 1
                    return self.refuse(append.promise, kind: "failed", "unexpected reply from Redis: \(value)")
                }
                self.answer(append, reply, replicated: replies.count > 1 ? replies[1] : nil)
            }
        }
    }

    /// Answers a publish Redis added `reply` of, once `replicated` (`WAIT`'s reply) says enough replicas have
    /// it, if asked.
    private func answer(_ append: Append, _ reply: AppendScript.Reply, replicated: EventLoopFuture<RedisValue>?) {
        guard let replicated else { return accepted(reply, append) }
        // Registered now, so that the follower keeps what it stores for this publish until WAIT answers.
        expect(append.additions)
        let waitReplicas = configuration.waitReplicas
        replicated.whenComplete { replicated in
            defer { self.settle(append.additions) }
            guard case .success(.integer(let count)) = replicated, count >= waitReplicas else {
                let count = if case .success(.integer(let count)) = replicated { "\(count)" } else { "none" }
                // WAIT cannot take a write back: say so, since the rows may still reach workers.
                return self.refuse(
                    append.promise, kind: "not_replicated",
                    "Redis has the batch but \(count) of \(waitReplicas) replicas confirmed it in time; "
                        + "it may still be delivered")
            }
            self.accepted(reply, append)
        }
    }

    /// Stores a publish Redis added whole in a transaction straight into the log, when at its turn the log
    /// ends at the entries Redis has before it (the check saw them): it is then stored as Redis holds it, and
    /// its writer is not kept waiting for the follower to read it back. Otherwise, or for what the log
    /// refuses, the follower stores it.
    private func accepted(_ reply: AppendScript.Reply, _ append: Append) {
        guard let hub, let follows = append.follows, reply.refusal == nil,
            reply.added.count == append.additions.count
        else { return answerOnceStored(reply, append, storedDirectly: []) }
        // Meanwhile the follower keeps what it stores of this publish, should it be first.
        expect(append.additions)
        inTurn { () -> EventLoopFuture<AppendResults> in
            let atItsPlace = StreamName.all.allSatisfy { stream in
                follows[stream.index].map { hub.log.currentToken(of: stream) == $0 } ?? true
            }
            guard atItsPlace else { return self.eventLoop.makeSucceededFuture([]) }
            return hub.store(Array(append.batches.prefix(append.entriesPerBatch.count)), on: self.eventLoop)
        }.whenComplete { stored in
            self.answerOnceStored(reply, append, storedDirectly: (try? stored.get()) ?? [])
            self.settle(append.additions)
        }
    }

    /// Answers each batch once every entry it added is stored: from `storedDirectly` (by batch, as far as it
    /// goes), or else by the follower.
    private func answerOnceStored(_ reply: AppendScript.Reply, _ append: Append, storedDirectly: AppendResults) {
        let (additions, entriesPerBatch, batches, promise) = (
            append.additions, append.entriesPerBatch, append.batches, append.promise
        )
        guard !stopped else { return promise.fail(RedisError.connectionClosed) }
        // The batch each entry belongs to.
        let batchOfEntry = entriesPerBatch.enumerated().flatMap { batch, count in repeatElement(batch, count: count) }
        var stored: [EventLoopFuture<AppendedBatch>] = []
        for ((addition, token), batch) in zip(zip(additions, reply.added), batchOfEntry) {
            statistics.entriesWritten[addition.stream.index] += 1
            statistics.sawRedisToken(token, of: addition.stream)
            if batch < storedDirectly.count, case .success(let appended) = storedDirectly[batch] {
                stored.append(eventLoop.makeSucceededFuture(appended))
            } else if let batch = storedMeanwhile[addition.stream.index].removeValue(forKey: token) {
                stored.append(eventLoop.makeSucceededFuture(batch))
            } else {
                let waiting = eventLoop.makePromise(of: AppendedBatch.self)
                awaiting[addition.stream.index][token] = waiting
                stored.append(waiting.futureResult)
            }
        }
        let refusal = reply.refusal.map { message, lastToken -> StreamLogError in
            let tokenTaken = message.contains("equal or smaller")
            statistics.refusedWrites[tokenTaken ? "token_taken" : "failed", default: 0] += 1
            return tokenTaken
                ? .tokenNotAfterCurrent(current: lastToken) : .storage("Redis refused the batch: \(message)")
        }
        publishStatistics()
        EventLoopFuture.whenAllComplete(stored, on: eventLoop).whenSuccess { outcomes in
            var results: AppendResults = []
            var next = 0
            for count in entriesPerBatch where next + count <= outcomes.count {
                // A batch of several entries (a run) is answered by its last.
                let last = outcomes[next + count - 1]
                next += count
                switch last {
                case .success(let batch): results.append(.success(batch))
                case .failure(let error): results.append(.failure(.storage("\(error)")))
                }
            }
            if let refusal { results.append(.failure(refusal)) }
            promise.succeed(Array(results.prefix(batches.count)))
        }
    }

    /// Runs `store` once every store begun before it has completed: what the follower reads and what this
    /// hub's transactions added reach the log one after the other, each deciding at its turn from what the log
    /// holds then.
    private func inTurn<Value>(_ store: @escaping () -> EventLoopFuture<Value>) -> EventLoopFuture<Value> {
        let turn = (lastStore ?? eventLoop.makeSucceededVoidFuture()).flatMap(store)
        lastStore = turn.map { _ in }.recover { _ in }
        return turn
    }

    /// A publish has registered what it waits for (or given up): the follower no longer keeps what it stores
    /// for it.
    private func settle(_ additions: [StreamEntries.Addition]) {
        for addition in additions {
            let index = addition.stream.index
            guard let count = inFlight[index][addition.token] else { continue }
            inFlight[index][addition.token] = count > 1 ? count - 1 : nil
        }
        for stream in AppendTransaction.streams(of: additions) where inFlight[stream.index][nil] == nil {
            storedMeanwhile[stream.index] = storedMeanwhile[stream.index].filter { isAwaited(stream, $0.key) }
        }
    }

    /// A publish's answer is awaited: the follower keeps what it stores of its entries.
    private func expect(_ additions: [StreamEntries.Addition]) {
        for addition in additions { inFlight[addition.stream.index][addition.token, default: 0] += 1 }
    }

    /// Whether an entry the follower stored may be one whose answer is awaited.
    private func isAwaited(_ stream: StreamName, _ token: Int64) -> Bool {
        inFlight[stream.index][token] != nil || inFlight[stream.index][nil] != nil
    }

    private func commandsConnected(_ connected: Bool) {
        forgetTips()
        guard connected else { return publishStatistics() }
        loadScripts().whenComplete { _ in
            self.sendQueued()
            self.publishStatistics()
        }
    }

    /// Loads the scripts, to be run by SHA-1 from then on.
    private func loadScripts() -> EventLoopFuture<Void> {
        outsideTransaction {
            let replies = self.commands.pipeline(Self.scripts.map { RESPCommand.arguments(["SCRIPT", "LOAD", $0]) })
            return EventLoopFuture.whenAllComplete(replies, on: self.eventLoop)
        }.map { results in
            for (source, result) in zip(Self.scripts, results) { self.scriptSHAs[source] = try? result.get().string }
        }
    }

    /// Redis no longer has the scripts (`SCRIPT FLUSH`, a restart): the append and catch-up scripts are sent
    /// whole until they are loaded again; trimming waits for them.
    private func scriptsLost() {
        scriptSHAs = [:]
        _ = loadScripts()
    }

    /// Runs a script by SHA-1 once Redis has it, whole before; a call refused because Redis forgot it has the
    /// scripts loaded again and is sent whole.
    private func evaluate(_ source: String, _ arguments: [String]) -> EventLoopFuture<RedisValue> {
        outsideTransaction { self.commands.send(LuaScript.evaluate(source, sha: self.scriptSHAs[source]) + arguments) }
            .flatMapError { error in
                guard LuaScript.isNotLoaded(error) else { return self.eventLoop.makeFailedFuture(error) }
                self.scriptsLost()
                return self.outsideTransaction {
                    self.commands.send(LuaScript.evaluate(source, sha: nil) + arguments)
                }
            }
    }

    // MARK: retention and older rows

    /// Trims every key of what `--retain-rows` and `--retain-age` no longer keep; never while Redis has not
    /// been compared with this hub's log, nor once it was found to have lost rows (an operator decides then).
    /// The script is run by SHA-1 only: a pass is skipped until Redis has it.
    private func trim() {
        guard let commands, commands.isReady, let trimSHA = scriptSHAs[TrimScript.source], verified,
            statistics.divergedStreams.isEmpty, !trimming, !transacting,
            !stopped
        else { return }
        let now = Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000)
        entryAges?.record(tokens: statistics.redisTokens, at: now)
        let streams = StreamName.all.filter { statistics.redisTokens[$0.index] > 0 }
        guard !streams.isEmpty else { return }
        trimming = true
        let command = TrimScript.arguments(
            sha: trimSHA, keys: streams.map(configuration.entries.key), keep: configuration.keepRows,
            batch: configuration.trimBatch, oldThrough: streams.map { entryAges?.oldThrough($0, at: now) })
        commands.send(command).whenComplete { result in
            self.trimming = false
            if case .failure(let error) = result, LuaScript.isNotLoaded(error) { return self.scriptsLost() }
            guard case .success(let value) = result, let removed = TrimScript.removed(value) else {
                return self.logger.warning("trimming the streams in Redis failed: \(result)")
            }
            for (stream, count) in zip(streams, removed) { self.statistics.entriesTrimmed[stream.index] += Int(count) }
            self.publishStatistics()
        }
    }

    /// The rows of `stream` after `token` through `through`, read from Redis (`XRANGE`): a catch-up older than
    /// the local log. Fails with ``StreamLogError/fallenBehind(oldestServable:)`` when Redis no longer holds
    /// them all either.
    public func backfill(_ stream: StreamName, after token: Int64, through: Int64, on eventLoop: any EventLoop)
        -> EventLoopFuture<LogPage>
    {
        let count = configuration.backfillCount
        let arguments = BackfillScript.arguments(
            key: configuration.entries.key(stream), after: token, through: through, count: count)
        return self.eventLoop.flatSubmit {
            let page: EventLoopFuture<LogPage> =
                if self.commands != nil, self.statistics.divergedStreams.isEmpty {
                    self.evaluate(BackfillScript.source, arguments).flatMapResult { reply in
                        BackfillScript.page(reply, stream: stream, after: token, through: through, count: count)
                    }
                } else {
                    self.eventLoop.makeFailedFuture(StreamLogError.fallenBehind(oldestServable: through))
                }
            return page.always { result in
                let outcome =
                    switch result {
                    case .success: "ok"
                    case .failure(StreamLogError.fallenBehind): "fallen_behind"
                    case .failure: "failed"
                    }
                self.statistics.backfills[outcome, default: 0] += 1
                self.publishStatistics()
            }
        }.hop(to: eventLoop)
    }

    // MARK: following

    private func followerConnected(_ connected: Bool) {
        verified = false
        followerID = nil
        publishStatistics()
        guard connected else { return }
        follower.send(["CLIENT", "ID"]).whenSuccess { reply in
            if case .integer(let id) = reply { self.followerID = id }
        }
        checkDivergence()
    }

    /// Redis must hold at least what this hub stored: a key missing or behind it means Redis lost data
    /// (restarted without persistence, flushed, or another Redis), and tokens would be handed out twice.
    /// Entries after what this hub stored may have been trimmed meanwhile (a new sidecar, or one that was
    /// away longer than the retention): the log then forgets what came before the first one left, so that a
    /// worker asking for those rows is told it has fallen behind rather than handed a gap.
    private func checkDivergence() {
        guard let hub else { return }
        keyInfos(StreamName.all).whenSuccess { keys in
            var diverged: [StreamName] = []
            var forgotten: [NewBatch] = []
            for (stream, key) in zip(StreamName.all, keys) {
                self.statistics.redisTokens[stream.index] = key.lastToken
                let stored = hub.log.currentToken(of: stream)
                if key.lastToken < stored {
                    diverged.append(stream)
                    self.logger.error(
                        "Redis is behind this sidecar's log: it lost data; writes are refused until an operator acts",
                        metadata: [
                            "stream": "\(stream)", "redis_token": "\(key.lastToken)", "stored_token": "\(stored)",
                        ])
                } else if key.trimmed(after: stored), let first = key.firstToken {
                    forgotten.append(self.forget(stream, before: first, stored: stored))
                }
            }
            self.statistics.divergedStreams = diverged
            let stored =
                forgotten.isEmpty
                ? self.eventLoop.makeSucceededVoidFuture()
                : self.inTurn { hub.store(forgotten, on: self.eventLoop).map { _ in } }
            stored.whenComplete { _ in
                self.verified = true
                self.sendQueued()
                self.publishStatistics()
                self.read()
            }
        }
    }

    /// The log forgets what came before `first`, the first entry left after entries were trimmed that this hub
    /// never stored: a worker asking for those rows is told it has fallen behind rather than handed a gap.
    private func forget(_ stream: StreamName, before first: Int64, stored: Int64) -> NewBatch {
        logger.notice(
            "entries after this sidecar's log were trimmed from Redis: nothing before the first left is served",
            metadata: ["stream": "\(stream)", "stored_token": "\(stored)", "first_token": "\(first)"])
        return .advance(stream, to: first - 1, forgettingEarlier: true)
    }

    /// For each stream whose first entry read does not follow the log's token, whether entries between were
    /// trimmed (the follower was behind by more than the retention): then what comes before is forgotten.
    private func forgettingTrimmed(before unsure: [(stream: StreamName, first: Int64)]) -> EventLoopFuture<[NewBatch]> {
        guard let hub else { return eventLoop.makeSucceededFuture([]) }
        return keyInfos(unsure.map(\.stream)).map { keys in
            zip(unsure, keys).compactMap { read, key in
                let stored = hub.log.currentToken(of: read.stream)
                // Trimming moves a key's first entry forward only: one at or before `stored + 1` now was then.
                guard key.trimmed(after: stored) else { return nil }
                return self.forget(read.stream, before: read.first, stored: stored)
            }
        }
    }

    /// What `XINFO STREAM` says of each stream's key, asked on the follower's connection; never fails (a key
    /// that could not be asked about says nothing).
    private func keyInfos(_ streams: [StreamName]) -> EventLoopFuture<[KeyInfo]> {
        let replies = follower.pipeline(
            streams.map { RESPCommand.arguments(["XINFO", "STREAM", configuration.entries.key($0)]) })
        return EventLoopFuture.whenAllComplete(replies, on: eventLoop).map { $0.map(KeyInfo.init) }
    }

    /// What an `XINFO STREAM` reply says of a key (a missing key: nothing).
    struct KeyInfo {
        var lastToken: Int64 = 0
        var firstToken: Int64?
        /// Whether entries were ever removed from the key (it holds fewer than were added).
        var hasBeenTrimmed = false

        /// Whether entries after `token` may have been trimmed: some were, and the first left is not the next.
        func trimmed(after token: Int64) -> Bool { hasBeenTrimmed && (firstToken ?? .max) > token + 1 }

        init(_ result: Result<RedisValue, any Error>) {
            guard case .success(.array(let fields)) = result else { return }
            var added: Int64?
            var length: Int64?
            for index in stride(from: 0, to: fields.count - 1, by: 2) {
                let value = fields[index + 1]
                switch fields[index].string {
                case "last-generated-id": lastToken = value.string.flatMap(Self.token) ?? 0
                case "first-entry":
                    firstToken = StreamEntries.entry(value).flatMap {
                        StreamEntries.firstRunToken(fields: $0.fields) ?? Self.token($0.id)
                    }
                case "entries-added": if case .integer(let count) = value { added = count }
                case "length": if case .integer(let count) = value { length = count }
                default: break
                }
            }
            hasBeenTrimmed = added != length
        }

        /// The token of any entry ID (`<token>-<seq>`; a `POSITION`'s `0-0` on a fresh key is 0).
        static func token(_ id: String) -> Int64? { Int64(id.prefix { $0 != "-" }) }
    }

    /// While a transaction is in flight the follower does not read: woken by the transaction's own entries,
    /// it would read back what this hub stores as the transaction answers. Its blocked `XREAD` is ended
    /// (`CLIENT UNBLOCK`, on the command connection, so before the transaction), and what other hubs added
    /// meanwhile is read on the command connection just before the transaction (`XREAD` without `BLOCK`),
    /// so that it never waits longer than one transaction.
    private func pauseFollower() {
        if reading, let followerID, !unblockRefused {
            commands.send(["CLIENT", "UNBLOCK", "\(followerID)"]).whenFailure { error in
                guard case RedisError.server(let message) = error,
                    message.hasPrefix("NOPERM") || message.lowercased().contains("unknown")
                else { return }
                self.unblockRefused = true
                self.logger.notice(
                    "Redis refused CLIENT UNBLOCK: this sidecar reads back its own entries",
                    metadata: ["error": "\(message)"])
            }
        }
        guard verified else { return }
        commands.send(
            configuration.entries.readCommand(after: readIDs(), count: configuration.readCount, blockMillis: nil)
        ).whenSuccess { reply in self.store(reply).whenComplete { _ in self.read() } }
    }

    /// Where each stream is read from: after what the log stored, or after an entry read since that is not
    /// a batch, which would otherwise be read again and again.
    private func readIDs() -> [String] {
        StreamName.all.map { stream in
            let stored = hub?.log.currentToken(of: stream) ?? 0
            if let passed = notBatches[stream.index], let token = KeyInfo.token(passed), token >= stored {
                return passed
            }
            return "\(stored)-0"
        }
    }

    /// Reads again once no transaction is in flight and what it added is stored.
    private func resumeReading() {
        guard !reading else { return }
        (lastStore ?? eventLoop.makeSucceededVoidFuture()).whenComplete { _ in self.read() }
    }

    private func read() {
        guard hub != nil, verified, !reading, !transacting || readAFullCount, !stopped, follower.isReady else {
            return
        }
        reading = true
        let blocking = !transacting
        let command = configuration.entries.readCommand(
            after: readIDs(), count: configuration.readCount, blockMillis: blocking ? configuration.blockMillis : nil)
        follower.send(command).whenComplete { result in
            switch result {
            case .success(let reply):
                // A blocking read answered with nothing may have been ended by a transaction: it says nothing
                // of how many entries wait.
                self.store(reply, tellsWhetherFull: !(blocking && reply == .null)).whenComplete { _ in
                    self.reading = false
                    self.read()
                }
            case .failure where self.stopped:
                self.reading = false
            case .failure(let error):
                self.reading = false
                self.statistics.errors["read", default: 0] += 1
                self.logger.warning("reading from Redis failed: \(error)")
                self.publishStatistics()
            // A lost connection reconnects and starts reading again; a refused read is retried then.
            }
        }
    }

    /// Stores what one `XREAD` returned, at its turn (``inTurn(_:)``), then hands each stored entry to the
    /// publish waiting for it.
    private func store(_ reply: RedisValue, tellsWhetherFull: Bool = true) -> EventLoopFuture<Void> {
        inTurn { self.storeInTurn(reply, tellsWhetherFull: tellsWhetherFull) }
    }

    /// Entries the log already has (this hub's own, stored as its transaction answered) are only counted.
    private func storeInTurn(_ reply: RedisValue, tellsWhetherFull: Bool) -> EventLoopFuture<Void> {
        guard let hub else { return eventLoop.makeSucceededVoidFuture() }
        var batches: [NewBatch] = []
        // Streams whose first entry read is not the token after the log's: entries between may have been trimmed.
        var unsure: [(stream: StreamName, first: Int64)] = []
        var seen = [Bool](repeating: false, count: StreamName.all.count)
        var passed = notBatches
        var perStream = [Int](repeating: 0, count: StreamName.all.count)
        for (stream, id, fields) in configuration.entries.entries(ofReadReply: reply) {
            perStream[stream.index] += 1
            if let token = StreamEntries.token(ofID: id), token <= hub.log.currentToken(of: stream) {
                statistics.entriesRead[stream.index] += 1
                statistics.sawRedisToken(token, of: stream)
                continue
            }
            switch StreamEntries.batch(stream: stream, id: id, fields: fields) {
            case .success(let batch):
                batches.append(batch)
                statistics.entriesRead[stream.index] += 1
                if let token = StreamEntries.token(ofID: id), case .exactly(let first) = batch.firstToken {
                    statistics.sawRedisToken(token, of: stream)
                    if !seen[stream.index], first > hub.log.currentToken(of: stream) + 1 {
                        unsure.append((stream, first))
                    }
                    seen[stream.index] = true
                }
            case .failure(let error):
                // Not ours (another program wrote to the key): counted and logged, never stored, and not read
                // again once what came before it is stored.
                passed[stream.index] = id
                statistics.errors["entry", default: 0] += 1
                logger.error("an entry in Redis is not a batch: \(error)", metadata: ["stream": "\(stream)"])
            }
        }
        if tellsWhetherFull { readAFullCount = perStream.contains { $0 >= configuration.readCount } }
        guard !batches.isEmpty else {
            notBatches = passed
            return eventLoop.makeSucceededVoidFuture()
        }
        let forgotten = unsure.isEmpty ? eventLoop.makeSucceededFuture([]) : forgettingTrimmed(before: unsure)
        return forgotten.flatMap { [batches] forgotten in hub.store(forgotten + batches, on: self.eventLoop) }.map {
            results in
            if results.allSatisfy({ if case .success = $0 { true } else { false } }) { self.notBatches = passed }
            for result in results {
                switch result {
                case .success(let batch):
                    if let waiting = self.awaiting[batch.stream.index].removeValue(forKey: batch.token) {
                        waiting.succeed(batch)
                    } else if self.isAwaited(batch.stream, batch.token) {
                        self.storedMeanwhile[batch.stream.index][batch.token] = batch
                    }
                case .failure(let error):
                    self.statistics.errors["store", default: 0] += 1
                    self.logger.error("storing what Redis holds failed: \(error)")
                }
            }
            self.publishStatistics()
        }
    }
}

/// Hears one Redis client's connection changes.
private final class ClientEvents: RedisClientDelegate {
    let onConnection: (Bool) -> Void

    init(onConnection: @escaping (Bool) -> Void) { self.onConnection = onConnection }

    func redisClient(received message: RedisMessage) {}
    func redisClient(connected: Bool, retryInMillis: Int64?, reason: String?) { onConnection(connected) }
}
