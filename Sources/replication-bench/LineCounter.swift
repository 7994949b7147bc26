import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The benchmarks' subscriber: reads on its own thread and counts `RDATA` lines, `POSITION` lines and
/// bytes, and nothing more, so that it is never what limits a server. It sends a `PING` every few seconds
/// so that no server takes it for dead during a long run.
final class LineCounter: Sendable {
    struct Progress: Sendable {
        var rows = 0
        var positions = 0
        var bytes = 0
        /// Monotonic seconds at which `rows` reached the expected count.
        var finishedAt: Double?
        /// Set when the server closed the connection first.
        var closed = false
    }

    private let fd: Int32
    private let expectedRows: Int
    private let progress = Mutex(Progress())
    private let stopping = Atomic<Bool>(false)
    private let done = Atomic<Bool>(false)

    /// Connects, sends `greeting` (NAME, REPLICATE) and starts reading.
    init(port: Int, greeting: String, expectedRows: Int) throws {
        fd = try LoopbackSocket.connect(port: port)
        self.expectedRows = expectedRows
        try LoopbackSocket.sendAll(fd, greeting)
        Thread.detachNewThread { [self] in readLoop() }
    }

    var current: Progress { progress.withLock { $0 } }

    /// The socket, for a caller that also writes on it (from one thread at a time).
    var descriptor: Int32 { fd }

    /// Stops reading and closes the socket.
    func stop() {
        stopping.store(true, ordering: .relaxed)
        shutdown(fd, Int32(SHUT_RDWR))
        while !done.load(ordering: .acquiring) { usleep(1_000) }
        close(fd)
    }

    private func readLoop() {
        defer { done.store(true, ordering: .releasing) }
        let capacity = 1 << 18
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        defer { buffer.deallocate() }
        var scanner = LineScanner()
        var lastPing = monotonicNow()
        while !stopping.load(ordering: .relaxed) {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 1_000) > 0 {
                let count = recv(fd, buffer, capacity, 0)
                if count <= 0 {
                    progress.withLock { $0.closed = true }
                    return
                }
                let (rows, positions) = scanner.scan(UnsafeRawBufferPointer(start: buffer, count: count))
                progress.withLock { progress in
                    progress.rows += rows
                    progress.positions += positions
                    progress.bytes += count
                    if progress.finishedAt == nil, progress.rows >= expectedRows, expectedRows > 0 {
                        progress.finishedAt = monotonicNow()
                    }
                }
            }
            if monotonicNow() - lastPing > 5 {
                lastPing = monotonicNow()
                try? LoopbackSocket.sendAll(fd, "PING \(Int(lastPing * 1000))\n")
            }
        }
    }
}

/// Counts lines by their first bytes across reads: `R` is `RDATA`, `PO` is `POSITION`. Jumps from newline
/// to newline with `memchr`, so a read costs little more than the copy out of the kernel.
struct LineScanner {
    private var atLineStart = true
    /// A line began with `P` as the last byte of the previous read.
    private var pendingP = false

    mutating func scan(_ bytes: UnsafeRawBufferPointer) -> (rows: Int, positions: Int) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return (0, 0) }
        var rows = 0
        var positions = 0
        if pendingP, bytes[0] == UInt8(ascii: "O") { positions += 1 }
        pendingP = false
        var index = 0
        while index < bytes.count {
            if atLineStart {
                switch bytes[index] {
                case UInt8(ascii: "R"): rows += 1
                case UInt8(ascii: "P"):
                    if index + 1 < bytes.count {
                        if bytes[index + 1] == UInt8(ascii: "O") { positions += 1 }
                    } else {
                        pendingP = true
                    }
                default: break
                }
            }
            guard let newline = memchr(base + index, 0x0A, bytes.count - index) else {
                atLineStart = false
                break
            }
            index = base.distance(to: UnsafeRawPointer(newline)) + 1
            atLineStart = true
        }
        return (rows, positions)
    }
}

func monotonicNow() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
}

/// The middle value, or the mean of the two middle ones.
func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return (sorted[(sorted.count - 1) / 2] + sorted[sorted.count / 2]) / 2
}

/// `text` left-aligned in `width` columns (Foundation's `%-14@` does not pad on Linux).
func padded(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}
