import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ReplicationCore
import StreamLog

/// A log whose page reads block on a thread of their own until the test lets them through: a disk as
/// slow as the test wants, without timing anything. Appends go straight to memory.
public final class GatedStreamLog: StreamLog {
    private let stored = InMemoryStreamLog()
    private let gate = DispatchSemaphore(value: 0)
    private let waiting = NIOLockedValueBox(0)
    private let pool: NIOThreadPool

    public init() {
        pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
    }

    /// Lets `count` reads through (one each), now or when they come.
    public func open(_ count: Int = 1) { for _ in 0..<count { gate.signal() } }

    /// Reads waiting at the gate.
    public var waitingReads: Int { waiting.withLockedValue { $0 } }

    public func shutDown() async throws {
        open(64)
        try await pool.shutdownGracefully()
    }

    public func currentToken(of stream: StreamName) -> Int64 { stored.currentToken(of: stream) }

    public func append(_ batches: [NewBatch], on eventLoop: any EventLoop) -> EventLoopFuture<AppendResults> {
        stored.append(batches, on: eventLoop)
    }

    public func read(_ stream: StreamName, after token: Int64, maxBytes: Int, on eventLoop: any EventLoop)
        -> EventLoopFuture<LogPage>
    {
        pool.runIfActive(eventLoop: eventLoop) { () throws(StreamLogError) in
            self.waiting.withLockedValue { $0 += 1 }
            self.gate.wait()
            self.waiting.withLockedValue { $0 -= 1 }
            return try self.stored.read(stream, after: token, maxBytes: maxBytes)
        }
    }

    public func close() async {}
}
