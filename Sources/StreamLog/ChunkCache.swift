import DequeModule
import NIOConcurrencyHelpers
import NIOCore

/// The chunks read most recently, shared by every reader of one log: workers catching up together read
/// each chunk from SQLite once, and a page that is one whole chunk is the cached buffer itself, written to
/// every socket without a copy. A chunk's bytes never change once stored, and no other chunk ever gets its
/// stream, first and last token (tokens only grow; compaction's merged chunk starts before the last chunk
/// it replaces), so entries need no invalidation; the oldest go first once the cache holds more than its
/// budget.
package final class ChunkCache: Sendable {
    private struct Key: Hashable {
        var stream: Int
        var firstToken: Int64
        var lastToken: Int64
    }

    private struct State {
        var entries: [Key: ByteBuffer] = [:]
        var order = Deque<Key>()
        var bytes = 0
    }

    private let budgetBytes: Int
    private let state = NIOLockedValueBox(State())

    package init(budgetBytes: Int) {
        self.budgetBytes = budgetBytes
    }

    /// The chunk's lines, from the cache or from `read` (then kept).
    package func lines<Failure: Error>(
        stream: Int, tokens: ClosedRange<Int64>, read: () throws(Failure) -> ByteBuffer
    ) throws(Failure) -> ByteBuffer {
        let key = Key(stream: stream, firstToken: tokens.lowerBound, lastToken: tokens.upperBound)
        if let cached = state.withLockedValue({ $0.entries[key] }) { return cached }
        let lines = try read()
        state.withLockedValue { state in
            guard state.entries.updateValue(lines, forKey: key) == nil else { return }
            state.order.append(key)
            state.bytes += lines.readableBytes
            while state.bytes > budgetBytes, let oldest = state.order.popFirst() {
                state.bytes -= state.entries.removeValue(forKey: oldest)?.readableBytes ?? 0
            }
        }
        return lines
    }
}
