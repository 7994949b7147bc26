import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import ReplicationCore
import StreamLog

/// A log whose page reads block on a thread of their own (Dispatch's, so that nothing has to be shut
/// down) until the test lets them through: a disk as slow as the test wants, without timing anything.
/// Appends go straight to memory.
public final class GatedStreamLog: StreamLog {
    private let stored = InMemoryStreamLog()
    private let gate = DispatchSemaphore(value: 0)
    private let waiting = NIOLockedValueBox(0)

    public init() {}

    /// Lets `count` reads through (one each), now or when they come.
    public func open(_ count: Int = 1) { for _ in 0..<count { gate.signal() } }

    /// Reads waiting at the gate.
    public var waitingReads: Int { waiting.withLockedValue { $0 } }

    public func currentToken(of stream: StreamName) -> Int64 { stored.currentToken(of: stream) }

    public func append(_ batches: [NewBatch], on eventLoop: any EventLoop) -> EventLoopFuture<AppendResults> {
        stored.append(batches, on: eventLoop)
    }

    public func read(_ stream: StreamName, after token: Int64, maxBytes: Int, on eventLoop: any EventLoop)
        -> EventLoopFuture<LogPage>
    {
        let promise = eventLoop.makePromise(of: LogPage.self)
        DispatchQueue.global().async {
            self.waiting.withLockedValue { $0 += 1 }
            self.gate.wait()
            self.waiting.withLockedValue { $0 -= 1 }
            promise.completeWith(
                Result { () throws(StreamLogError) in try self.stored.read(stream, after: token, maxBytes: maxBytes) })
        }
        return promise.futureResult
    }

    public func close() async {}
}
