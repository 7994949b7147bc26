import ReplicationCore

/// A row as the session sees it: which stream, which token (the transport's bytes are not needed).
struct FuzzRow: Sendable, Equatable {
    var stream: StreamName
    var token: Int64
}

/// ``ServerSession`` driven by an event sequence against a model log: lines from a worker, rows appended,
/// pages read (answered in any order with other events), writability changes, timer ticks, shutdown.
/// Whatever the order, a subscriber is written each row after its starting token exactly once, in order,
/// with no gap, a `POSITION` never announces a token whose rows were not written (one queued while the
/// connection was paused answers an earlier request: it is only held to the head), at most one page read
/// is asked for at a time, and nothing is written after the `ERROR` that closes the connection. A page may
/// be answered as the log was when it was asked for, rows appended since then left out; once the events
/// end and every page asked for is answered, an open connection has every row of its streams.
func checkSession(_ data: UnsafeRawBufferPointer) {
    var driver = SessionDriver()
    var input = data.makeIterator()
    while let operation = input.next(), !driver.isClosed {
        let argument = input.next() ?? 0
        driver.step(operation: operation, argument: argument)
    }
    driver.drain()
}

private struct SessionDriver {
    static let streams: [StreamName] = [.events, .typing]

    var session = ServerSession<[FuzzRow]>(
        serverName: "fuzz", writers: [], configuration: ProtocolConfiguration(maxPendingCommands: 20),
        routing: HubRouting(), now: 0)
    /// The log: every token of each stream (one row per token).
    var log: [[Int64]] = Array(repeating: [], count: StreamName.all.count)
    /// Per stream: the last token this subscriber has been brought to, `nil` while not subscribed.
    var cursor: [Int64?] = Array(repeating: nil, count: StreamName.all.count)
    /// Set while the commands a paused connection queued are written: each answers the request it was made
    /// for, which a newer `REPLICATE` may have replaced since, so only its token's bound is checked.
    var writingQueuedCommands = false
    /// The page asked for, and the stream's head when it was asked for.
    var pendingRead: (stream: StreamName, after: Int64, head: Int64)?
    var writable = true
    var errorWritten = false
    var isClosed = false
    var now: Int64 = 0

    init() { perform(session.connectionActive(now: 0, wallMillis: 0)) }

    func head(_ stream: StreamName) -> Int64 { log[stream.index].last ?? 0 }

    mutating func step(operation: UInt8, argument: UInt8) {
        let stream = Self.streams[Int(argument) % Self.streams.count]
        switch operation % 8 {
        case 0: line(argument)
        case 1:
            now += Int64(argument) * 100
            perform(session.tick(now: now, wallMillis: now))
        case 2:
            writable.toggle()
            writingQueuedCommands = true
            perform(session.writabilityChanged(isWritable: writable, now: now))
            writingQueuedCommands = false
        case 3:
            let token = head(stream) + 1 + Int64(argument % 3)
            let batch = StreamBatch(
                stream: stream, previousToken: head(stream), token: token, rowCount: 1,
                liveLines: [FuzzRow(stream: stream, token: token)])
            log[stream.index].append(token)
            perform(session.batchesAppended([batch], joined: batch, isWritable: writable, now: now))
        case 4: answerRead(rows: 1 + Int(argument % 4), asOfRequest: false)
        case 5: answerRead(rows: 1 + Int(argument % 4), asOfRequest: true)
        case 6: perform(session.shutDown(now: now))
        default:
            _ = session.connectionClosed(.closedByPeer, wallMillis: now)
            isClosed = true
        }
        if !isClosed, let read = session.nextRead(isWritable: writable) { perform([read]) }
    }

    private mutating func line(_ argument: UInt8) {
        let stream = Self.streams[Int(argument / 4) % Self.streams.count]
        let text: String
        switch argument % 4 {
        case 0: text = "NAME w"
        case 1: text = "REPLICATE \(stream) NOW"
        case 2: text = "REPLICATE \(stream) \(argument / 8)"
        default: text = "PING \(argument)"
        }
        let heads = log.map { $0.last ?? 0 }
        let actions = session.lineReceived(text[...], now: now, wallMillis: now) { heads[$0.index] }
        // A REPLICATE moves the subscription's start before any of its actions are performed.
        if text.hasPrefix("REPLICATE"), !errorWritten {
            cursor[stream.index] = text.hasSuffix("NOW") ? head(stream) : min(Int64(argument / 8), head(stream))
        }
        perform(actions)
    }

    /// Answers the page read asked for: up to `rows` rows of the model after the token asked for, of the
    /// log as it is now or as it was when the page was asked for (a read that ran while rows were appended).
    private mutating func answerRead(rows: Int, asOfRequest: Bool) {
        guard let (stream, after, headWhenAsked) = pendingRead.take() else { return }
        let head = asOfRequest ? headWhenAsked : head(stream)
        let later = log[stream.index].filter { $0 > after && $0 <= head }
        let page = later.prefix(rows)
        let reachedHead = page.count == later.count
        let result = CatchUpPage(
            lines: page.map { FuzzRow(stream: stream, token: $0) }, rowCount: page.count,
            endToken: reachedHead ? max(head, after) : page.last!, reachedHead: reachedHead)
        perform(session.pageRead(stream, after: after, .page(result), now: now))
    }

    /// With no more events: a writable connection has every page it asks for answered, and then every
    /// row of each stream it subscribed to, unless it was closed.
    mutating func drain() {
        guard !isClosed, !errorWritten else { return }
        if !writable { step(operation: 2, argument: 0) }
        var pages = 0
        while !isClosed, pendingRead != nil, pages < 100_000 {
            answerRead(rows: 4, asOfRequest: false)
            if let read = session.nextRead(isWritable: writable) { perform([read]) }
            pages += 1
        }
        guard !isClosed, !errorWritten else { return }
        for stream in Self.streams {
            guard let at = cursor[stream.index] else { continue }
            check(at >= head(stream), "\(stream) left at \(at) with the head at \(head(stream)) and no page asked for")
        }
    }

    private mutating func perform(_ actions: [ServerSession<[FuzzRow]>.Action]) {
        for action in actions {
            switch action {
            case .writeRows(let rows, let count):
                check(!errorWritten, "rows written after the closing ERROR")
                check(rows.count == count, "\(rows.count) rows written as \(count)")
                for row in rows { rowWritten(row) }
            case .write(.position(let name, let token)):
                check(!errorWritten, "POSITION written after the closing ERROR")
                guard let stream = StreamName(name), let at = cursor[stream.index] else {
                    return check(false, "POSITION \(name) \(token) for a stream not subscribed")
                }
                if writingQueuedCommands {
                    check(token <= head(stream), "POSITION \(name) \(token) beyond the head \(head(stream))")
                    continue
                }
                let skipped = log[stream.index].first { $0 > at && $0 <= token }
                check(skipped == nil, "POSITION \(name) \(token) announced before row \(skipped ?? 0) was written")
                cursor[stream.index] = max(at, token)
            case .write:
                check(!errorWritten, "a command written after the closing ERROR")
            case .writeErrorAndClose:
                errorWritten = true
            case .readPage(let stream, let after):
                check(pendingRead == nil, "a second page read asked for while one is under way")
                pendingRead = (stream, after, head(stream))
            case .abort:
                isClosed = true
            default:
                break
            }
        }
    }

    private mutating func rowWritten(_ row: FuzzRow) {
        guard let at = cursor[row.stream.index] else { return check(false, "row \(row) for a stream not subscribed") }
        let next = log[row.stream.index].first { $0 > at }
        check(row.token == next, "row \(row.token) of \(row.stream) written after \(at); the next row is \(next ?? -1)")
        cursor[row.stream.index] = row.token
    }
}
