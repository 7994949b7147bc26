import ReplicationCore
import Testing

struct TokenBucketTests {
    @Test func aBurstThenTheRate() {
        var bucket = TokenBucket(perSecond: 4, capacity: 3, now: 0)
        let burst = (0..<3).map { _ in bucket.take(now: 0) }
        #expect(burst == [true, true, true])
        #expect(bucket.take(now: 0) == false)
        #expect(bucket.take(now: 249) == false)  // a quarter of a second short by a millisecond
        #expect(bucket.take(now: 250) == true)
        #expect(bucket.take(now: 250) == false)
        // Refills stop at the capacity, however long the pause.
        let refilled = (0..<3).map { _ in bucket.take(now: 60_000) }
        #expect(refilled == [true, true, true])
        #expect(bucket.take(now: 60_000) == false)
    }

    @Test func timeGoingBackwardsGivesNothing() {
        var bucket = TokenBucket(perSecond: 1, capacity: 1, now: 1_000)
        #expect(bucket.take(now: 1_000) == true)
        #expect(bucket.take(now: 0) == false)
        #expect(bucket.take(now: 1_999) == false)
        #expect(bucket.take(now: 2_000) == true)
    }
}
