import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A TCP proxy on 127.0.0.1 (a port the kernel picks) in front of a server on `127.0.0.1:target`. Each of
/// its first `cuts` connections is cut with a reset both ways after a random number of bytes (counted in
/// both directions, so that a cut may fall inside a line, before an acknowledgement or inside one); later
/// connections pass through whole. The random numbers come from `seed`, which a failing test prints.
public final class CuttingProxy: @unchecked Sendable {  // state behind `lock`
    public let port: Int
    public let seed: UInt64
    private let target: Int
    private let bytesBeforeCut: ClosedRange<Int>
    private let listener: Int32
    private let lock = NSLock()
    private var random: SplitMix64
    private var cutsLeft: Int
    private var cutsMade = 0
    private var stopped = false
    private let finished = DispatchGroup()

    public init(target: Int, cuts: Int, bytesBeforeCut: ClosedRange<Int>, seed: UInt64 = .random(in: 0...UInt64.max))
        throws
    {
        ignoreBrokenPipes()
        self.target = target
        self.cutsLeft = cuts
        self.bytesBeforeCut = bytesBeforeCut
        self.seed = seed
        self.random = SplitMix64(seed: seed)
        (listener, port) = try loopbackSocket(listening: true)
        finished.enter()
        Thread.detachNewThread { [self] in
            acceptConnections()
            finished.leave()
        }
    }

    /// Connections cut so far.
    public var cuts: Int { lock.withLock { cutsMade } }

    /// Stops accepting, closes every connection and waits for its threads.
    public func stop() {
        lock.withLock { stopped = true }
        shutdown(listener, Int32(SHUT_RDWR))
        finished.wait()
        close(listener)
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    private func acceptConnections() {
        while !isStopped {
            var ready = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 100) > 0 else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            let budget = lock.withLock { () -> Int? in
                guard cutsLeft > 0 else { return nil }
                cutsLeft -= 1
                return bytesBeforeCut.lowerBound + Int(random.next() % UInt64(bytesBeforeCut.count))
            }
            finished.enter()
            Thread.detachNewThread { [self] in
                relay(client, budget: budget)
                finished.leave()
            }
        }
    }

    /// Copies bytes both ways until either side closes, or until `budget` bytes have gone through: then the
    /// part of the last read that fits goes on and both sides are reset.
    private func relay(_ client: Int32, budget: Int?) {
        guard let server = try? LineSocket(port: target) else {
            close(client)
            return
        }
        var left = budget ?? Int.max
        var fds = [
            pollfd(fd: client, events: Int16(POLLIN), revents: 0),
            pollfd(fd: server.fd, events: Int16(POLLIN), revents: 0),
        ]
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        copying: while !isStopped {
            guard poll(&fds, 2, 100) >= 0 else { break }
            for (from, to) in [(client, server.fd), (server.fd, client)] {
                let read = buffer.withUnsafeMutableBytes { recv(from, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if read == 0 { break copying }
                guard read > 0 else {
                    if errno == EAGAIN || errno == EWOULDBLOCK { continue }
                    break copying
                }
                let passed = min(read, left)
                guard Self.sendAll(buffer[..<passed], to: to) else { break copying }
                left -= passed
                if left == 0 {
                    lock.withLock { cutsMade += 1 }
                    break copying
                }
            }
        }
        var resetOnClose = linger(l_onoff: 1, l_linger: 0)
        setsockopt(client, SOL_SOCKET, SO_LINGER, &resetOnClose, socklen_t(MemoryLayout<linger>.size))
        close(client)
        server.reset()
    }

    private static func sendAll(_ bytes: ArraySlice<UInt8>, to fd: Int32) -> Bool {
        var sent = bytes.startIndex
        while sent < bytes.endIndex {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return false }
            sent += n
        }
        return true
    }
}

/// A small seeded generator (SplitMix64), so that a test's random choices can be replayed from its seed.
struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
