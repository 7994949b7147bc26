import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Fan-out, whole system: N rows on `events` to K subscribers, through our sidecar (with the durable
/// SQLite log, the default, and/or the in-memory log), through Synapse 1.6.1's real replication server,
/// and through the wire limit (the same bytes written to K sockets with nothing in between), in the same
/// run, with the same minimal line-counting subscribers. With `--catch-up`, K new subscribers then
/// fetch the same rows from the sidecar's log.
struct FanoutBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout", abstract: "Rows/s to K subscribers: our sidecar, Synapse 1.6.1 and the wire limit.")

    @Option(help: "Rows published on the events stream.")
    var rows = 200_000

    @Option(help: "Subscriber counts to measure, comma-separated.")
    var subscribers = "1,4,16"

    @Flag(help: "Once the rows are in, time K new subscribers catching up on them from the log (REPLICATE events 0).")
    var catchUp = false

    @Flag(help: "Restart the sidecar between publishing and the catch-up (SQLite log only): catch-up from the files.")
    var restart = false

    @Flag(
        help: """
            Also measure sidecars sharing their streams through Redis (writer on sidecar A, subscribers on sidecar \
            B, in-memory logs, a redis-server started for it) and redis-benchmark's XADD figure, in the same run.
            """)
    var throughRedis = false

    // One hub's time alone moves by half between runs on a busy machine, as much as a change moves the
    // ratio: alternating the two measurements and taking the median ratio keeps each ratio's pair close in time.
    @Option(
        help: """
            With --through-redis: measure one in-memory hub, then through Redis, this many times in turn; \
            the headline is the median of the rounds' ratios.
            """)
    var rounds = 5

    // The same reason as --rounds: one ratio moves by a fifth between runs on a shared machine.
    @Option(
        help: """
            Measure the wire limit and each log this many times in turn; the ratios are then the medians of \
            the rounds' ratios.
            """)
    var `repeat` = 1

    @Option(help: "Largest K at which Synapse is measured (it takes minutes beyond 16).")
    var synapseUpTo = 16

    @OptionGroup var logs: SidecarLogOptions

    @OptionGroup var synapse: SynapseOptions

    @Option(help: "Seconds one run may take before it counts as failed.")
    var timeout = 300.0

    func validate() throws {
        guard rows > 0 else { throw ValidationError("--rows must be at least 1, got \(rows)") }
        guard let counts = subscriberCounts, !counts.isEmpty, counts.allSatisfy({ (1...256).contains($0) }) else {
            throw ValidationError("--subscribers must list counts between 1 and 256, like 1,4,16; got '\(subscribers)'")
        }
        if restart, !catchUp { throw ValidationError("--restart goes with --catch-up") }
        if restart, logs.kinds != [.sqlite] { throw ValidationError("--restart needs --log sqlite alone") }
        guard rounds > 0 else { throw ValidationError("--rounds must be at least 1, got \(rounds)") }
        guard `repeat` > 0 else { throw ValidationError("--repeat must be at least 1, got \(`repeat`)") }
    }

    private var subscriberCounts: [Int]? {
        let parsed = subscribers.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        return parsed.contains(nil) ? nil : parsed.compactMap { $0 }
    }

    /// One K's figures: the wire limit with each log's live fan-out and catch-up (once per `--repeat`
    /// round), and Synapse's.
    private struct Measured {
        var k: Int
        var logRounds: [(wire: FanoutResult, sidecar: [(label: String, live: FanoutResult, catchUp: FanoutResult?)])] = []
        var synapse: FanoutResult?
        /// With `--through-redis`: each round's hub alone and through Redis, measured one after the other.
        var rounds: [(hub: FanoutResult, redis: FanoutResult)] = []
    }

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        defer { logs.removeData() }
        let environment = synapse.environment
        let payload = FanoutPayload(rows: rows)
        print(String(format: "fan-out of %d rows on events (%.0f bytes per RDATA line), time until every subscriber has every row",
            rows, Double(payload.bytes.count) / Double(rows)))
        print("  K  server                    seconds   rows/s delivered   server CPU s   CPU s per M rows   server peak RSS")
        var results: [Measured] = []
        for k in subscriberCounts! {
            var measured = Measured(k: k)
            for _ in 1...`repeat` {
                let wire = try measureWireLimit(payload: payload, subscribers: k)
                print(wire.row(k: k, label: "wire limit"))
                var sidecar: [(label: String, live: FanoutResult, catchUp: FanoutResult?)] = []
                for kind in logs.kinds! {
                    let label = "sidecar " + logs.label(kind)
                    let (live, catchUp) = try measureSidecar(environment: environment, log: kind, payload: payload, subscribers: k)
                    print(live.row(k: k, label: label))
                    if let catchUp { print(catchUp.row(k: k, label: "  catch-up" + (restart ? " after restart" : ""))) }
                    sidecar.append((label, live, catchUp))
                }
                measured.logRounds.append((wire, sidecar))
            }
            if throughRedis {
                for round in 1...rounds {
                    let hub = try measureSidecar(environment: environment, log: .memory, payload: payload, subscribers: k, liveOnly: true)
                    print(hub.live.row(k: k, label: "round \(round): one hub"))
                    let redis = try measureThroughRedis(environment: environment, payload: payload, subscribers: k)
                    print(redis.row(k: k, label: "round \(round): A->Redis->B"))
                    measured.rounds.append((hub.live, redis))
                }
            }
            if !synapse.withoutSynapse, k <= synapseUpTo {
                measured.synapse = try measureSynapse(environment: environment, subscribers: k)
                print(measured.synapse!.row(k: k, label: "synapse 1.6.1"))
            }
            results.append(measured)
        }
        print("ratios (rows/s delivered, same run):")
        for result in results {
            // Each ratio is between the two measurements of one round; the writer's rows/s: every subscriber
            // gets each row once.
            var ratios: [Double] = []
            var ofXADD: [Double] = []
            for (index, round) in result.rounds.enumerated() where round.hub.completed && round.redis.completed {
                ratios.append(round.redis.rowsPerSecond / round.hub.rowsPerSecond)
                ofXADD.append(round.redis.rowsPerSecond / Double(result.k) / (round.redis.redisXADDRate ?? .nan))
                print(String(format: "  K=%-3d round %d: one hub %.2f s, through Redis %.2f s: %.2fx; writer's rows/s/redis-benchmark XADD %.2fx",
                    result.k, index + 1, round.hub.seconds, round.redis.seconds, ratios.last!, ofXADD.last!))
            }
            if !ratios.isEmpty {
                print(String(format: "  K=%-3d through Redis/one in-memory hub %.2fx, median of %d rounds (%.2f-%.2f, %d at least 0.5); "
                    + "writer's rows/s/redis-benchmark XADD %.2fx", result.k, median(ratios), ratios.count, ratios.min()!,
                    ratios.max()!, ratios.filter { $0 >= 0.5 }.count, median(ofXADD)))
            }
            for (index, label) in (result.logRounds.first?.sidecar.map(\.label) ?? []).enumerated() {
                let rounds = result.logRounds.map { (wire: $0.wire, sidecar: $0.sidecar[index]) }
                let live = rounds.map { $0.sidecar.live.rowsPerSecond / $0.wire.rowsPerSecond }
                let catchUp = rounds.compactMap { round in
                    round.sidecar.catchUp.flatMap { $0.completed ? $0.rowsPerSecond / round.wire.rowsPerSecond : nil }
                }
                var line = String(format: "  K=%-3d %@ live/wire limit %@", result.k, label, Self.summary(live))
                if !catchUp.isEmpty { line += ", catch-up/wire limit " + Self.summary(catchUp) }
                if let synapse = result.synapse, synapse.completed {
                    let liveRowsPerSecond = median(rounds.map(\.sidecar.live.rowsPerSecond))
                    line += String(format: ", live/synapse %.1fx", liveRowsPerSecond / synapse.rowsPerSecond)
                }
                print(line)
            }
        }
    }

    /// A ratio, or with several rounds their median, range, each round's and how many reach 0.5.
    private static func summary(_ ratios: [Double]) -> String {
        guard ratios.count > 1 else { return String(format: "%.2fx", ratios.first ?? .nan) }
        return String(format: "%.2fx, median of %d rounds (%.2f-%.2f, %d at least 0.5: %@)", median(ratios), ratios.count,
            ratios.min()!, ratios.max()!, ratios.filter { $0 >= 0.5 }.count,
            ratios.map { String(format: "%.2f", $0) }.joined(separator: " "))
    }

    // MARK: The three servers

    private func measureWireLimit(payload: FanoutPayload, subscribers k: Int) throws -> FanoutResult {
        let (listener, port) = try LoopbackSocket.listen()
        defer { close(listener) }
        var counters: [LineCounter] = []
        var accepted: [Int32] = []
        for _ in 0..<k {
            counters.append(try LineCounter(port: port, greeting: "", expectedRows: rows))
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { throw LoopbackSocket.Failure(description: "accept failed (errno \(errno))") }
            try LoopbackSocket.sendAll(fd, "SERVER wire\nPOSITION events 0\n")
            accepted.append(fd)
        }
        defer { for fd in accepted { close(fd) } }
        try waitForSubscriptions(counters)
        let started = monotonicNow()
        let sent = send(payload, to: accepted)
        defer { sent.wait() }
        return try collect(counters, started: started, server: nil)
    }

    /// Live fan-out of the payload from one writer to K subscribers, then (with `--catch-up`) K new
    /// subscribers reading all of it from the log.
    private func measureSidecar(
        environment: BenchEnvironment, log: SidecarLogKind, payload: FanoutPayload, subscribers k: Int, liveOnly: Bool = false
    ) throws -> (live: FanoutResult, catchUp: FanoutResult?) {
        var server = try BenchSidecar(environment: environment, log: log, options: logs, retainRows: rows)
        defer { server.process.stop() }
        let counters = try (0..<k).map {
            try LineCounter(port: server.port, greeting: "NAME bench-\($0)\nREPLICATE events NOW\n", expectedRows: rows)
        }
        try waitForSubscriptions(counters)
        // The writer's acknowledgements are read (and only counted) on its own thread, as a real writer would.
        let writer = try LineCounter(port: server.port, greeting: "NAME bench-writer\n", expectedRows: 0)
        let before = server.process.usage
        let started = monotonicNow()
        let sent = send(payload, to: [writer.descriptor])
        let live = try collect(counters, started: started, server: (server.process, before))
        sent.wait()
        writer.stop()
        guard catchUp, !liveOnly, live.completed else { return (live, nil) }
        if restart {
            server.process.stop()
            server = try BenchSidecar(environment: environment, log: log, options: logs, retainRows: rows, keepData: true)
        }
        let beforeCatchUp = server.process.usage
        let catchingUpStarted = monotonicNow()
        let catchingUp = try (0..<k).map {
            try LineCounter(port: server.port, greeting: "NAME catch-up-\($0)\nREPLICATE events 0\n", expectedRows: rows)
        }
        var result = try collect(catchingUp, started: catchingUpStarted, server: (server.process, beforeCatchUp))
        if restart {
            result.note = String(format: "resident memory %.0f MiB after the restart, at most %.0f MiB during the catch-up",
                beforeCatchUp.residentBytes / 1_048_576, (result.peakResidentBytes ?? 0) / 1_048_576)
        }
        return (live, result)
    }

    /// The payload written to sidecar A, read by K subscribers on sidecar B, both following one Redis
    /// (append-only file, fsync every second); the note has Redis's CPU time and redis-benchmark's XADD
    /// rate on the same server (one client, 64 commands in flight, rows of the payload's size).
    private func measureThroughRedis(
        environment: BenchEnvironment, payload: FanoutPayload, subscribers k: Int
    ) throws -> FanoutResult {
        let redis = try BenchRedis()
        defer { redis.stop() }
        let shared = redis.sidecarArguments
        let a = try BenchSidecar(environment: environment, log: .memory, options: logs, retainRows: rows, extraArguments: shared)
        defer { a.process.stop() }
        let b = try BenchSidecar(environment: environment, log: .memory, options: logs, retainRows: rows, extraArguments: shared)
        defer { b.process.stop() }
        let counters = try (0..<k).map {
            try LineCounter(port: b.port, greeting: "NAME bench-\($0)\nREPLICATE events NOW\n", expectedRows: rows)
        }
        try waitForSubscriptions(counters)
        let writer = try LineCounter(port: a.port, greeting: "NAME bench-writer\n", expectedRows: 0)
        let redisBefore = redis.cpuSeconds
        let aBefore = a.process.usage
        let started = monotonicNow()
        let sent = send(payload, to: [writer.descriptor])
        var result = try collect(counters, started: started, server: (b.process, b.process.usage))
        sent.wait()
        writer.stop()
        let redisCPU = redis.cpuSeconds - redisBefore
        let commands = try redis.commandStatistics().prefix(4).joined(separator: ", ")
        let rowBytes = payload.bytes.count / rows
        let xadd = try redis.xaddRate(requests: max(rows, 100_000), valueBytes: rowBytes)
        result.note = String(
            format: "CPU s: sidecar A %.2f, Redis %.2f; redis-benchmark XADD (%d-byte field, 1 client, 64 in flight): %.0f/s",
            a.process.usage.cpuSeconds - aBefore.cpuSeconds, redisCPU, rowBytes, xadd) + "\n       Redis ran " + commands
        result.redisXADDRate = xadd
        return result
    }

    private func measureSynapse(environment: BenchEnvironment, subscribers k: Int) throws -> FanoutResult {
        let server = try ServerProcess(
            executable: environment.python, arguments: [environment.script("synapse_fanout_server.py"), "\(rows)"],
            currentDirectory: synapse.packageRoot)
        defer { server.stop() }
        guard let port = Int(try server.readLine(startingWith: "PORT ", timeout: 120)) else {
            throw LoopbackSocket.Failure(description: "synapse_fanout_server.py printed no port")
        }
        let counters = try (0..<k).map {
            try LineCounter(port: port, greeting: "NAME bench-\($0)\nREPLICATE events NOW\n", expectedRows: rows)
        }
        try waitForSubscriptions(counters)
        let before = server.usage
        let started = monotonicNow()
        server.write("GO\n")
        return try collect(counters, started: started, server: (server, before))
    }

    // MARK: Measuring

    /// Writes the payload to each socket from its own thread, as fast as the kernel takes it.
    private func send(_ payload: FanoutPayload, to sockets: [Int32]) -> DispatchGroup {
        let group = DispatchGroup()
        for fd in sockets {
            group.enter()
            Thread.detachNewThread {
                payload.bytes.withUnsafeBytes { try? LoopbackSocket.sendAll(fd, $0) }
                group.leave()
            }
        }
        return group
    }

    private func waitForSubscriptions(_ counters: [LineCounter]) throws {
        let deadline = monotonicNow() + 60
        while counters.contains(where: { $0.current.positions == 0 }) {
            guard monotonicNow() < deadline else {
                throw LoopbackSocket.Failure(description: "a subscriber got no POSITION within 60 s")
            }
            usleep(5_000)
        }
    }

    /// Waits until every subscriber has every row (or one is dropped, or time runs out).
    private func collect(_ counters: [LineCounter], started: Double, server: (ServerProcess, ServerProcess.Usage)?) throws
        -> FanoutResult
    {
        defer { for counter in counters { counter.stop() } }
        let deadline = started + timeout
        while true {
            // Subscribers note their own finishing time; polling rarely leaves the cores to the servers.
            usleep(10_000)
            let progress = counters.map(\.current)
            if progress.allSatisfy({ $0.finishedAt != nil }) {
                let finished = progress.compactMap(\.finishedAt).max()!
                let usage = server.map { $0.0.usage }
                return FanoutResult(
                    completed: true, seconds: finished - started, rowsDelivered: rows * counters.count,
                    cpuSeconds: usage.map { $0.cpuSeconds - server!.1.cpuSeconds },
                    peakResidentBytes: usage?.peakResidentBytes, note: "")
            }
            let dropped = progress.filter { $0.closed && $0.finishedAt == nil }
            if !dropped.isEmpty || monotonicNow() > deadline {
                let delivered = progress.reduce(0) { $0 + $1.rows }
                return FanoutResult(
                    completed: false, seconds: monotonicNow() - started, rowsDelivered: delivered, cpuSeconds: nil,
                    peakResidentBytes: nil,
                    note: dropped.isEmpty
                        ? "timed out after \(Int(timeout)) s"
                        : "\(dropped.count) subscriber(s) dropped by the server after \(dropped.map(\.rows).min()!) rows")
            }
        }
    }
}

struct FanoutResult {
    var completed: Bool
    var seconds: Double
    var rowsDelivered: Int
    var cpuSeconds: Double?
    var peakResidentBytes: Double?
    var note: String
    /// redis-benchmark's XADD requests per second on the same Redis, for a run through Redis.
    var redisXADDRate: Double?

    var rowsPerSecond: Double { Double(rowsDelivered) / seconds }

    /// Server CPU seconds per million rows delivered.
    var cpuSecondsPerMillionRows: Double? { cpuSeconds.map { $0 / (Double(rowsDelivered) / 1e6) } }

    func row(k: Int, label: String) -> String {
        let start = String(format: "%3d  ", k) + padded(label, 24)
        guard completed else { return start + "did not finish: " + note }
        let cpu = cpuSeconds.map { String(format: "%12.2f", $0) } ?? String(repeating: " ", count: 11) + "-"
        let perMillion =
            cpuSecondsPerMillionRows.map { String(format: "%16.3f", $0) } ?? String(repeating: " ", count: 15) + "-"
        let rss = peakResidentBytes.map { String(format: "%11.0f MiB", $0 / 1_048_576) } ?? String(repeating: " ", count: 14) + "-"
        let figures = String(format: "%8.2f %18.0f %@   %@   %@", seconds, rowsPerSecond, cpu, perMillion, rss)
        return start + figures + (note.isEmpty ? "" : "\n       " + note)
    }
}

/// The rows every server sends, encoded once: `RDATA events <token> <row>` lines, one token per row,
/// the row as Synapse 1.6.1 writes an event (synapse_fanout_server.py builds the same rows).
struct FanoutPayload: Sendable {
    let bytes: [UInt8]

    init(rows: Int) {
        var text = ""
        text.reserveCapacity(rows * 170)
        for token in 1...rows { text += Self.line(token: token) }
        bytes = Array(text.utf8)
    }

    /// The `RDATA` line of `token`, with its newline.
    static func line(token: Int) -> String {
        let event = String(repeating: "0", count: max(0, 20 - String(token).count)) + String(token)
        let roomNumber = String(token % 97)
        let room = String(repeating: "0", count: 12 - roomNumber.count) + roomNumber
        return "RDATA events \(token) [\"ev\", [\"$\(event)-bench-event:bench.example.org\", "
            + "\"!\(room)-room:bench.example.org\", \"m.room.message\", null, null, null]]\n"
    }
}
