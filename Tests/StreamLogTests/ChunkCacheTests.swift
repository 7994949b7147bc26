import NIOCore
import StreamLog
import Testing

/// The chunk cache holds at most its budget: the oldest chunks go first, and a chunk still held is
/// served without reading it again.
@Suite struct ChunkCacheTests {
    /// A chunk of `bytes` bytes, counting the reads that reach "SQLite".
    func lines(_ cache: ChunkCache, first: Int64, bytes: Int = 100, reads: inout Int) -> ByteBuffer {
        cache.lines(stream: 0, tokens: first...(first + 9)) {
            reads += 1
            return ByteBuffer(repeating: UInt8(ascii: "x"), count: bytes)
        }
    }

    @Test func keepsTheNewestChunksWithinItsBudget() {
        let cache = ChunkCache(budgetBytes: 250)
        var reads = 0
        for first in [1, 11, 21] as [Int64] { _ = lines(cache, first: first, reads: &reads) }
        #expect(reads == 3)
        // 300 bytes went in: the oldest chunk went, the two newest are served from the cache.
        _ = lines(cache, first: 21, reads: &reads)
        _ = lines(cache, first: 11, reads: &reads)
        #expect(reads == 3)
        _ = lines(cache, first: 1, reads: &reads)
        #expect(reads == 4)
        // Reading the first chunk again took the place of the oldest one left.
        _ = lines(cache, first: 11, reads: &reads)
        #expect(reads == 5)
    }

    @Test func aChunkLargerThanTheBudgetIsNotKept() {
        let cache = ChunkCache(budgetBytes: 250)
        var reads = 0
        let chunk = lines(cache, first: 1, bytes: 300, reads: &reads)
        #expect(chunk.readableBytes == 300)
        _ = lines(cache, first: 1, bytes: 300, reads: &reads)
        #expect(reads == 2)
    }
}
