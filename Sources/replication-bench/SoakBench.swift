import ArgumentParser
import Foundation
import ReplicationMetrics
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Many connections for minutes: idle workers that churn (reset, then reconnect), a steady writer, a
/// subscriber that checks every row, slow and stalled workers, and a scrape every second. Prints the
/// server's memory, descriptors and scrape latency over time; fails when a row is lost, when descriptors
/// do not return to their baseline once every client has gone, or when memory outgrows the budget the
/// log's retention implies.
struct SoakBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak", abstract: "Connections, churn, a writer, slow workers and scrapes for minutes; nothing lost.")

    @Option(help: "Worker connections held open (besides the writer and the checking subscriber).")
    var connections = 1_000

    @Option(help: "How long to run.")
    var minutes = 2.0

    @Option(help: "Rows the writer publishes per second.")
    var rowsPerSecond = 200

    @Option(help: "Idle connections reset and reopened per second.")
    var churnPerSecond = 20

    @Option(help: "Rows the server keeps per stream (--retain-rows of its in-memory log).")
    var retainRows = 20_000

    @Option(help: "Seconds between samples.")
    var every = 10.0

    /// Resident bytes allowed per retained row: a measured ~440 for these rows, with room to spare.
    static let budgetPerRow = 1_024
    /// Resident bytes allowed per connection the server holds, beyond the rows.
    static let budgetPerConnection = 32 * 1_024
    /// What the runtime, the event loops and allocator slack may add on their own.
    static let budgetSlack = 48 * 1_024 * 1_024

    func validate() throws {
        guard connections >= 40 else { throw ValidationError("--connections must be at least 40") }
        guard minutes > 0, every > 0 else { throw ValidationError("--minutes and --every must be positive") }
        guard rowsPerSecond > 0, churnPerSecond >= 0 else { throw ValidationError("--rows-per-second must be positive") }
    }

    func run() throws {
        raiseDescriptorLimit()
        let environment = BenchEnvironment(packageRoot: FileManager.default.currentDirectoryPath)
        let port = try LoopbackSocket.freePort()
        let metricsPort = try LoopbackSocket.freePort()
        let server = try ServerProcess(
            executable: environment.sidecar,
            arguments: [
                "serve", "--port", "\(port)", "--metrics-port", "\(metricsPort)", "--in-memory", "--retain-rows",
                "\(retainRows)", "--writer", "pub", "--log-level", "error",
            ])
        defer { server.stop() }
        try server.waitUntilListening(port: port)
        try server.waitUntilListening(port: metricsPort)
        let pid = server.process.processIdentifier
        // The baseline is taken after a first round of connections and scrapes has come and gone, so that
        // what the server sets up lazily the first time counts in it.
        let warmUp = try WorkerPopulation(port: port, count: 50, churnPerSecond: 0)
        let warmUpScraper = Scraper(port: metricsPort)
        while warmUpScraper.count == 0 { usleep(10_000) }
        warmUpScraper.stop()
        warmUp.close()
        let baseline = try Sample.settled(pid: pid)
        print("soak: \(connections) connections, \(rowsPerSecond) rows/s, \(churnPerSecond) resets/s, \(minutes) min")
        print("baseline: rss \(mebibytes(baseline.residentBytes)), \(baseline.descriptors) descriptors")

        let writer = try SoakWriter(port: port, rowsPerSecond: rowsPerSecond)
        let checker = try RowChecker(port: port)
        let workers = try WorkerPopulation(port: port, count: connections, churnPerSecond: churnPerSecond)
        let scraper = Scraper(port: metricsPort)
        print(" elapsed  rss        fds   scrape p50/max ms  published  acked      checked    resets")
        let start = monotonicNow()
        var peakResident = baseline.residentBytes
        while monotonicNow() - start < minutes * 60 {
            let next = min(start + minutes * 60, monotonicNow() + every)
            while monotonicNow() < next { usleep(100_000) }
            let sample = Sample(pid: pid)
            peakResident = max(peakResident, sample.residentBytes)
            let latencies = scraper.takeLatencies()
            let written = writer.progress
            print(
                padded(String(format: "%6.0fs", monotonicNow() - start), 9)
                    + padded(mebibytes(sample.residentBytes), 11) + padded("\(sample.descriptors)", 6)
                    + padded(String(format: "%.1f/%.1f", percentile(latencies, 0.5) * 1e3, (latencies.max() ?? 0) * 1e3), 19)
                    + padded("\(written.published)", 11) + padded("\(written.acknowledged)", 11)
                    + padded("\(checker.progress.rows)", 11) + "\(workers.resets)")
        }

        // Wind down: no new rows, every acknowledged row must reach the checking subscriber.
        scraper.stop()
        workers.stopChurning()
        let acknowledged = writer.stop()
        let deadline = monotonicNow() + 60
        while checker.progress.rows < acknowledged, checker.progress.failure == nil, monotonicNow() < deadline {
            usleep(50_000)
        }
        let checked = checker.stop()
        let resident = Sample(pid: pid).residentBytes
        workers.close()
        var descriptors = Sample(pid: pid).descriptors
        let fdDeadline = monotonicNow() + 30
        while descriptors > baseline.descriptors, monotonicNow() < fdDeadline {
            usleep(50_000)
            descriptors = Sample(pid: pid).descriptors
        }

        let lost = max(0, Int(acknowledged) - checked.rows)
        let budget =
            baseline.residentBytes + Double(retainRows * Self.budgetPerRow + (connections + 2) * Self.budgetPerConnection
                + Self.budgetSlack)
        var failures: [String] = []
        if let failure = checked.failure { failures.append(failure) }
        if lost > 0 { failures.append("\(lost) acknowledged rows never reached the checking subscriber") }
        if descriptors > baseline.descriptors {
            failures.append("\(descriptors) descriptors open after every client left, \(baseline.descriptors) before")
        }
        if peakResident > budget {
            failures.append("peak rss \(mebibytes(peakResident)) is over the budget of \(mebibytes(budget))")
        }
        print("rows: \(acknowledged) acknowledged, \(checked.rows) checked in order, \(lost) lost")
        print(
            "rss: \(mebibytes(baseline.residentBytes)) at start, \(mebibytes(peakResident)) peak, "
                + "\(mebibytes(resident)) at the end; budget \(mebibytes(budget)) "
                + "(\(retainRows) rows × \(Self.budgetPerRow) B + \(connections + 2) connections × "
                + "\(Self.budgetPerConnection / 1_024) KiB + \(Self.budgetSlack >> 20) MiB)")
        print("descriptors: \(baseline.descriptors) at start, \(descriptors) after every client left")
        print("resets: \(workers.resets); scrapes: \(scraper.count) (\(scraper.failures) failed)")
        if scraper.failures > 0 { failures.append("\(scraper.failures) scrapes failed") }
        guard failures.isEmpty else {
            for failure in failures { print("FAILED: \(failure)") }
            throw ExitCode.failure
        }
        print("soak passed")
    }
}

/// The server's resident memory and open descriptors, from /proc.
private struct Sample {
    var residentBytes: Double
    var descriptors: Int

    init(pid: Int32) {
        residentBytes = ProcessStatistics.cpuAndResident(ofProcess: pid)?.residentBytes ?? 0
        descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
    }

    /// A sample once the descriptor count has stopped falling for half a second (closed clients gone).
    static func settled(pid: Int32) throws -> Sample {
        var last = Sample(pid: pid)
        var stableSince = monotonicNow()
        let deadline = monotonicNow() + 30
        while monotonicNow() - stableSince < 0.5 {
            guard monotonicNow() < deadline else { throw LoopbackSocket.Failure(description: "descriptors never settled") }
            usleep(50_000)
            let next = Sample(pid: pid)
            if next.descriptors != last.descriptors { stableSince = monotonicNow() }
            last = next
        }
        return last
    }
}

private func mebibytes(_ bytes: Double) -> String { String(format: "%.1f MiB", bytes / 1_048_576) }

private func percentile(_ values: [Double], _ fraction: Double) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]
}

/// The row the writer publishes at `token`, which the checker expects back byte for byte.
private func soakRow(_ token: Int64) -> String {
    "RDATA events \(token) [\"ev\", [\"$soak-\(token)\", \"!room:soak\", \"m.room.message\", null, null, null]]\n"
}

/// Publishes `events` rows at a steady rate on one writer connection and reads their acknowledgements.
private final class SoakWriter: Sendable {
    struct Progress: Sendable {
        var published: Int64 = 0
        var acknowledged: Int64 = 0
    }

    private let fd: Int32
    private let state = Mutex(Progress())
    private let stopping = Atomic<Bool>(false)
    private let done = Atomic<Bool>(false)

    init(port: Int, rowsPerSecond: Int) throws {
        fd = try LoopbackSocket.connect(port: port)
        try LoopbackSocket.sendAll(fd, "NAME pub\n")
        Thread.detachNewThread { [self] in publish(rowsPerSecond: rowsPerSecond) }
    }

    var progress: Progress { state.withLock { $0 } }

    /// Stops publishing, waits for the last acknowledgement, and returns the last acknowledged token.
    func stop() -> Int64 {
        stopping.store(true, ordering: .relaxed)
        while !done.load(ordering: .acquiring) { usleep(1_000) }
        close(fd)
        return progress.acknowledged
    }

    private func publish(rowsPerSecond: Int) {
        defer { done.store(true, ordering: .releasing) }
        let start = monotonicNow()
        var token: Int64 = 0
        var pending = ""
        var lastPing = start
        while true {
            let stopRequested = stopping.load(ordering: .relaxed)
            if !stopRequested {
                let due = Int64((monotonicNow() - start) * Double(rowsPerSecond))
                if due > token {
                    let rows = ((token + 1)...due).map(soakRow).joined()
                    guard (try? LoopbackSocket.sendAll(fd, rows)) != nil else { return }
                    token = due
                    state.withLock { $0.published = token }
                }
                if monotonicNow() - lastPing > 5 {
                    lastPing = monotonicNow()
                    guard (try? LoopbackSocket.sendAll(fd, "PING \(Int(lastPing * 1000))\n")) != nil else { return }
                }
            } else if state.withLock({ $0.acknowledged }) >= token {
                return
            }
            // Acknowledgements: `POSITION events <token>` once each batch is stored.
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 10) > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 65_536)
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { return }
            pending += String(decoding: chunk[..<count], as: UTF8.self)
            while let newline = pending.firstIndex(of: "\n") {
                let line = pending[..<newline]
                if line.hasPrefix("POSITION events "), let acked = Int64(line.dropFirst("POSITION events ".count)) {
                    state.withLock { $0.acknowledged = max($0.acknowledged, acked) }
                }
                pending = String(pending[pending.index(after: newline)...])
            }
        }
    }
}

/// A subscriber from token 0 that checks every row is the next one, exactly as published.
private final class RowChecker: Sendable {
    struct Progress: Sendable {
        var rows = 0
        var failure: String?
    }

    private let fd: Int32
    private let state = Mutex(Progress())
    private let stopping = Atomic<Bool>(false)
    private let done = Atomic<Bool>(false)

    init(port: Int) throws {
        fd = try LoopbackSocket.connect(port: port)
        try LoopbackSocket.sendAll(fd, "NAME checker\nREPLICATE events 0\n")
        Thread.detachNewThread { [self] in check() }
    }

    var progress: Progress { state.withLock { $0 } }

    func stop() -> Progress {
        stopping.store(true, ordering: .relaxed)
        shutdown(fd, Int32(SHUT_RDWR))
        while !done.load(ordering: .acquiring) { usleep(1_000) }
        close(fd)
        return progress
    }

    private func check() {
        defer { done.store(true, ordering: .releasing) }
        var pending: [UInt8] = []
        var expected: Int64 = 1
        var lastPing = monotonicNow()
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while !stopping.load(ordering: .relaxed) {
            if monotonicNow() - lastPing > 5 {
                lastPing = monotonicNow()
                try? LoopbackSocket.sendAll(fd, "PING \(Int(lastPing * 1000))\n")
            }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 200) > 0 else { continue }
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else {
                if !stopping.load(ordering: .relaxed) { fail("the server closed the checking subscriber") }
                return
            }
            pending += chunk[..<count]
            var start = 0
            while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[start...newline], as: UTF8.self)
                start = newline + 1
                guard line.hasPrefix("RDATA") else { continue }  // SERVER, PING, POSITION
                guard line == soakRow(expected) else {
                    fail("expected the row of token \(expected), got \(line.prefix(80).debugDescription)")
                    return
                }
                expected += 1
                state.withLock { $0.rows += 1 }
            }
            pending.removeFirst(start)
        }
    }

    private func fail(_ reason: String) { state.withLock { $0.failure = $0.failure ?? reason } }
}

/// The other workers, on one polling thread: most are idle subscribers that read what they get, some of
/// which are reset (RST) and reconnected all the time; a few read a little once a second (slow); a few
/// never read at all (stalled) while subscribed from token 0.
private final class WorkerPopulation: Sendable {
    private enum Kind { case idle, slow, stalled }
    private struct Worker {
        var fd: Int32
        var kind: Kind
    }

    private let port: Int
    private let resetCount = Atomic<Int>(0)
    private let churning = Atomic<Bool>(true)
    private let stopping = Atomic<Bool>(false)
    private let done = Atomic<Bool>(false)

    init(port: Int, count: Int, churnPerSecond: Int) throws {
        self.port = port
        var workers: [Worker] = []
        let special = max(1, count / 50)
        for index in 0..<count {
            let kind: Kind = index < special ? .stalled : index < 2 * special ? .slow : .idle
            workers.append(Worker(fd: try Self.open(port: port, index: index, kind: kind), kind: kind))
        }
        Thread.detachNewThread { [self, workers] in run(workers, churnPerSecond: churnPerSecond) }
    }

    var resets: Int { resetCount.load(ordering: .relaxed) }

    func stopChurning() { churning.store(false, ordering: .relaxed) }

    /// Closes every connection (cleanly) and waits for the thread to end.
    func close() {
        stopping.store(true, ordering: .relaxed)
        while !done.load(ordering: .acquiring) { usleep(1_000) }
    }

    private static func open(port: Int, index: Int, kind: Kind) throws -> Int32 {
        let fd = try LoopbackSocket.connect(port: port)
        switch kind {
        case .idle:
            // One in ten follows the writer's stream, the rest a stream nothing is published on.
            let stream = index % 10 == 0 ? "events" : "typing"
            try LoopbackSocket.sendAll(fd, "NAME idle-\(index % 20)\nREPLICATE \(stream) NOW\n")
        case .slow: try LoopbackSocket.sendAll(fd, "NAME slow\nREPLICATE events 0\n")
        case .stalled: try LoopbackSocket.sendAll(fd, "NAME stalled\nREPLICATE events 0\n")
        }
        return fd
    }

    private func run(_ initial: [Worker], churnPerSecond: Int) {
        defer { done.store(true, ordering: .releasing) }
        var workers = initial
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var nextSlowRead = monotonicNow() + 1
        var churnDebt = 0.0
        var lastTick = monotonicNow()
        var victim = 0
        while !stopping.load(ordering: .relaxed) {
            var pollers = workers.map { pollfd(fd: $0.fd, events: $0.kind == .idle ? Int16(POLLIN) : 0, revents: 0) }
            _ = poll(&pollers, nfds_t(pollers.count), 50)
            for (index, poller) in pollers.enumerated() where poller.revents != 0 {
                _ = chunk.withUnsafeMutableBytes { recv(workers[index].fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            }
            let now = monotonicNow()
            if now >= nextSlowRead {
                nextSlowRead = now + 1
                for worker in workers where worker.kind == .slow {
                    _ = chunk.withUnsafeMutableBytes { recv(worker.fd, $0.baseAddress, 4_096, Int32(MSG_DONTWAIT)) }
                }
            }
            guard churning.load(ordering: .relaxed) else { continue }
            churnDebt += (now - lastTick) * Double(churnPerSecond)
            lastTick = now
            while churnDebt >= 1 {
                churnDebt -= 1
                // The next idle connection in turn: reset it, then open another in its place.
                repeat { victim = (victim + 1) % workers.count } while workers[victim].kind != .idle
                var resetOnClose = linger(l_onoff: 1, l_linger: 0)
                setsockopt(workers[victim].fd, SOL_SOCKET, SO_LINGER, &resetOnClose, socklen_t(MemoryLayout<linger>.size))
                Glibc.close(workers[victim].fd)
                resetCount.add(1, ordering: .relaxed)
                if let fd = try? Self.open(port: port, index: victim, kind: .idle) { workers[victim].fd = fd }
            }
        }
        for worker in workers { Glibc.close(worker.fd) }
    }
}

/// GET /metrics once a second on a keep-alive connection, timing each.
private final class Scraper: Sendable {
    private struct State {
        var latencies: [Double] = []
        var count = 0
        var failures = 0
    }

    private let state = Mutex(State())
    private let stopping = Atomic<Bool>(false)
    private let done = Atomic<Bool>(false)

    init(port: Int) {
        Thread.detachNewThread { [self] in scrape(port: port) }
    }

    var count: Int { state.withLock { $0.count } }
    var failures: Int { state.withLock { $0.failures } }

    func takeLatencies() -> [Double] {
        state.withLock { state in
            defer { state.latencies = [] }
            return state.latencies
        }
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        while !done.load(ordering: .acquiring) { usleep(1_000) }
    }

    private func scrape(port: Int) {
        defer { done.store(true, ordering: .releasing) }
        var client = try? BlockingHTTPClient(port: port)
        while !stopping.load(ordering: .relaxed) {
            let start = monotonicNow()
            do {
                guard let connected = client else { throw BlockingHTTPClient.Failure(what: "connect") }
                _ = try connected.get("/metrics")
                let elapsed = monotonicNow() - start
                state.withLock {
                    $0.latencies.append(elapsed)
                    $0.count += 1
                }
            } catch {
                state.withLock {
                    $0.failures += 1
                    $0.count += 1
                }
                client = try? BlockingHTTPClient(port: port)
            }
            usleep(useconds_t(max(0, 1 - (monotonicNow() - start)) * 1e6))
        }
    }
}
