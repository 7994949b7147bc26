import ArgumentParser
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// How long a writer waits for its acknowledgement: from sending a row's `RDATA` line to reading the
/// `POSITION` that says it is stored (after an fsync with `--sync full`; with `--through-redis`, once
/// Redis has it and the sidecar has read it back and stored it), at a steady light rate and with the
/// writer sending as fast as the connection takes its lines.
struct AckLatencyBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ack-latency",
        abstract: "Writer's RDATA to its POSITION acknowledgement: p50 and p99 at a steady rate and at full speed.")

    @Option(help: "Rows per second of the steady run.")
    var rate = 1_000

    @Option(help: "Rows of the steady run.")
    var steadyRows = 5_000

    @Option(help: "Rows of the full-speed run.")
    var fullSpeedRows = 200_000

    @OptionGroup var logs: SidecarLogOptions

    @Flag(
        help: "Also measure a sidecar sharing its streams through a redis-server started for it, with Redis's CPU time."
    )
    var throughRedis = false

    @Option(help: "The package's root (unused; accepted so that `all` can pass it to every part).")
    var packageRoot = FileManager.default.currentDirectoryPath

    func validate() throws {
        guard rate > 0, steadyRows > 0, fullSpeedRows > 0 else {
            throw ValidationError("--rate, --steady-rows and --full-speed-rows must be positive")
        }
    }

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        defer { logs.removeData() }
        print("acknowledgement latency of one writer (RDATA sent to its POSITION read), one token per row:")
        print(
            "  " + padded("log", 22) + padded("load", 24) + "      rows     p50 ms     p99 ms     max ms  Redis CPU s")
        let environment = BenchEnvironment(packageRoot: packageRoot)
        for throughRedis in throughRedis ? [false, true] : [false] {
            for kind in logs.kinds! {
                for paced in [true, false] {
                    try measure(environment: environment, log: kind, paced: paced, throughRedis: throughRedis)
                }
            }
        }
    }

    private func measure(environment: BenchEnvironment, log kind: SidecarLogKind, paced: Bool, throughRedis: Bool)
        throws
    {
        let rows = paced ? steadyRows : fullSpeedRows
        let redis = throughRedis ? try BenchRedis() : nil
        defer { redis?.stop() }
        let server = try BenchSidecar(
            environment: environment, log: kind, options: logs, retainRows: rows,
            extraArguments: redis?.sidecarArguments ?? [])
        defer { server.process.stop() }
        let redisBefore = redis?.cpuSeconds
        let latencies = try measure(port: server.port, rows: rows, rate: paced ? Double(rate) : nil)
        let redisCPU = redis.map { String(format: "%13.2f", $0.cpuSeconds - redisBefore!) } ?? "            -"
        let load = paced ? "steady \(rate) rows/s" : "full speed"
        print(
            "  " + padded(logs.label(kind) + (throughRedis ? " via Redis" : ""), 22) + padded(load, 24)
                + String(
                    format: "%10d %10.3f %10.3f %10.3f", rows, percentile(latencies, 0.50) * 1e3,
                    percentile(latencies, 0.99) * 1e3, latencies.last! * 1e3) + redisCPU)
    }

    /// Sends `rows` lines (paced at `rate`, or as fast as the socket takes them in groups of 64) and
    /// returns each row's latency in seconds, sorted.
    private func measure(port: Int, rows: Int, rate: Double?) throws -> [Double] {
        let fd = try LoopbackSocket.connect(port: port)
        defer { close(fd) }
        try LoopbackSocket.sendAll(fd, "NAME bench-writer\n")
        let times = AckTimes(rows: rows)
        let reader = Thread { times.readAcknowledgements(fd) }
        reader.start()
        let lines = (1...rows).map { Array(FanoutPayload.line(token: $0).utf8) }
        let started = monotonicNow()
        if let rate {
            for token in 1...rows {
                let wait = started + Double(token - 1) / rate - monotonicNow()
                if wait > 0 { usleep(UInt32(wait * 1e6)) }
                times.sent(token, at: monotonicNow())
                try lines[token - 1].withUnsafeBytes { try LoopbackSocket.sendAll(fd, $0) }
            }
        } else {
            for group in stride(from: 1, through: rows, by: 64) {
                let tokens = group...min(group + 63, rows)
                let bytes = tokens.flatMap { lines[$0 - 1] }
                let now = monotonicNow()
                for token in tokens { times.sent(token, at: now) }
                try bytes.withUnsafeBytes { try LoopbackSocket.sendAll(fd, $0) }
            }
        }
        guard times.waitForAll(deadline: monotonicNow() + 120) else {
            throw LoopbackSocket.Failure(description: "not every row was acknowledged within 120 s")
        }
        return times.latencies().sorted()
    }

    private func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
        sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]
    }
}

/// Send and acknowledgement times per token, written by the sending thread and the reading thread
/// (each slot by one of them, read only once both are done).
private final class AckTimes: @unchecked Sendable {
    private let sendTimes: UnsafeMutableBufferPointer<Double>
    private let lastAcknowledged = NSLock()
    /// Acknowledgements in arrival order: (token, time). `POSITION n` acknowledges every token up to n.
    private var acknowledgements: [(token: Int, time: Double)] = []
    private let rows: Int

    init(rows: Int) {
        self.rows = rows
        sendTimes = .allocate(capacity: rows + 1)
        sendTimes.initialize(repeating: 0)
    }

    deinit { sendTimes.deallocate() }

    func sent(_ token: Int, at time: Double) { sendTimes[token] = time }

    /// Reads `POSITION events <token>` lines until the last token is acknowledged or the socket closes.
    func readAcknowledgements(_ fd: Int32) {
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let prefix = Array("POSITION events ".utf8)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { return }
            let now = monotonicNow()
            pending += buffer[0..<count]
            var start = 0
            while let newline = pending[start...].firstIndex(of: 0x0A) {
                let line = pending[start..<newline]
                start = newline + 1
                guard line.starts(with: prefix),
                    let token = Int(String(decoding: line.dropFirst(prefix.count), as: UTF8.self))
                else { continue }
                lastAcknowledged.withLock { acknowledgements.append((token, now)) }
                if token >= rows { return }
            }
            pending.removeFirst(start)
        }
    }

    func waitForAll(deadline: Double) -> Bool {
        while monotonicNow() < deadline {
            if lastAcknowledged.withLock({ acknowledgements.last?.token ?? 0 }) >= rows { return true }
            usleep(2_000)
        }
        return false
    }

    /// Each token's latency: from its sending to the first acknowledgement of it or a later token.
    func latencies() -> [Double] {
        let acknowledged = lastAcknowledged.withLock { acknowledgements }
        var result: [Double] = []
        result.reserveCapacity(rows)
        var next = 0
        for token in 1...rows {
            while acknowledged[next].token < token { next += 1 }
            result.append(acknowledged[next].time - sendTimes[token])
        }
        return result
    }
}
