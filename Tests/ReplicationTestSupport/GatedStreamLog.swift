import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import ReplicationCore
import StreamLog

/// A log whose page reads block on a thread of their own (Dispatch's, so that nothing has to be shut
/// down) until the test lets them through: a disk as slow as the test wants, without timing anything.
/// Appends go straight to memory, or, when `holdingAppends`, wait (unstored) until ``releaseAppends()``:
/// commits as slow as the test wants.
public final class GatedStreamLog: StreamLog {
    private let stored = InMemoryStreamLog()
    private let gate = DispatchSemaphore(value: 0)
    private let waiting = NIOLockedValueBox(0)
    /// Appends waiting to be stored and their rows' bytes; `nil` once appends go straight through.
    private let heldAppends: NIOLockedValueBox<(appends: [@Sendable () -> Void], bytes: Int)?>

    public init(holdingAppends: Bool = false) {
        heldAppends = NIOLockedValueBox(holdingAppends ? ([], 0) : nil)
    }

    /// Bytes of the rows of the appends waiting to be stored.
    public var heldAppendBytes: Int { heldAppends.withLockedValue { $0?.bytes ?? 0 } }

    /// Stores the appends held so far, in order, and every later one at once.
    public func releaseAppends() {
        let held = heldAppends.withLockedValue { held in
            defer { held = nil }
            return held?.appends ?? []
        }
        for append in held { append() }
    }

    /// Lets `count` reads through (one each), now or when they come.
    public func open(_ count: Int = 1) { for _ in 0..<count { gate.signal() } }

    /// Reads waiting at the gate.
    public var waitingReads: Int { waiting.withLockedValue { $0 } }

    public func currentToken(of stream: StreamName) -> Int64 { stored.currentToken(of: stream) }

    public func append(_ batches: [NewBatch], on eventLoop: any EventLoop) -> EventLoopFuture<AppendResults> {
        let promise = eventLoop.makePromise(of: AppendResults.self)
        let store: @Sendable () -> Void = { promise.completeWith(self.stored.append(batches, on: eventLoop)) }
        let held = heldAppends.withLockedValue { held -> Bool in
            guard held != nil else { return false }
            held!.appends.append(store)
            held!.bytes += batches.reduce(0) { $0 + Self.bytes(of: $1) }
            return true
        }
        if !held { store() }
        return promise.futureResult
    }

    private static func bytes(of batch: NewBatch) -> Int {
        switch batch {
        case .rows(_, let rows, _): rows.bytes.readableBytes
        case .run(_, let lines, _): lines.readableBytes
        case .advance: 0
        }
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
