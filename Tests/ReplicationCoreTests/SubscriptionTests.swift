import Testing

@testable import ReplicationCore

@Suite struct SubscriptionTests {
    @Test func liveSubscriptionWritesBatchesThatFollowItsCursor() {
        var subscription = Subscription.live(at: 5)
        #expect(subscription.offered(previousToken: 5, token: 7, canWrite: true) == .write)
        #expect(subscription.cursor == 7)
        #expect(subscription.offered(previousToken: 6, token: 7, canWrite: true) == .skip)
    }

    @Test func aPausedSubscriptionKeepsItsCursorAndCatchesUpLater() {
        var subscription = Subscription.live(at: 5)
        #expect(subscription.offered(previousToken: 5, token: 6, canWrite: false) == .skip)
        #expect(subscription.cursor == 5 && subscription.isCatchingUp)
        #expect(subscription.offered(previousToken: 6, token: 7, canWrite: true) == .skip)
        // Back at the head without a POSITION: nothing was requested.
        #expect(subscription.pageWritten(endToken: 7, reachedHead: true) == false)
        #expect(subscription.phase == .live && subscription.cursor == 7)
    }

    @Test func aMissedBatchTurnsToTheLog() {
        var subscription = Subscription.live(at: 5)
        #expect(subscription.offered(previousToken: 6, token: 8, canWrite: true) == .catchUp)
        #expect(subscription.cursor == 5 && subscription.isCatchingUp)
    }

    @Test func aPageThatEndsBeforeABatchOfferedWhileItWasReadIsNotTheHead() {
        var subscription = Subscription.replicating(after: 0, head: 10)
        // The page was read at head 10; batch (10, 12] was committed and offered before it was written.
        #expect(subscription.offered(previousToken: 10, token: 12, canWrite: true) == .skip)
        #expect(subscription.pageWritten(endToken: 10, reachedHead: true) == false)
        #expect(subscription.isCatchingUp && subscription.cursor == 10)
        #expect(subscription.pageWritten(endToken: 12, reachedHead: true) == true)
        #expect(subscription.phase == .live)
    }

    @Test func aPageThatEndsBeforeTheHeadWhenSubscribingIsNotTheHead() {
        // Asked for by an earlier subscription from the same token, read at head 10; the log was at 12
        // when this one was made.
        var subscription = Subscription.replicating(after: 4, head: 12)
        #expect(subscription.pageWritten(endToken: 10, reachedHead: true) == false)
        #expect(subscription.isCatchingUp && subscription.cursor == 10)
    }

    @Test func replicateAnnouncesThePositionWhenItReachesTheHead() {
        var subscription = Subscription.replicating(after: 0, head: 0)
        #expect(subscription.offered(previousToken: 0, token: 1, canWrite: true) == .skip)
        #expect(subscription.pageWritten(endToken: 10, reachedHead: false) == false)
        #expect(subscription.isCatchingUp)
        #expect(subscription.pageWritten(endToken: 20, reachedHead: true) == true)
        #expect(subscription.phase == .live && subscription.cursor == 20)
    }
}

@Suite struct SubscriptionInsideARunTests {
    @Test func aCursorInsideARunCatchesUpRatherThanRepeatingRows() {
        var subscription = Subscription.live(at: 5)
        // A run of one-row batches 4, 5, 6, 7 (previous token 3) was never split, but if a cursor ever
        // sat inside one, writing it whole would repeat rows 4 and 5.
        #expect(subscription.offered(previousToken: 3, token: 7, canWrite: true) == .catchUp)
        #expect(subscription.isCatchingUp && subscription.cursor == 5)
    }
}
