import RedisStreams
import ReplicationCore
import ReplicationMetrics
import StreamLog

extension RedisSharedStreams {
    /// The metric families of the shared streams, as one scrape shows them beside `log`'s tokens.
    func metricFamilies(log: any StreamLog) -> [FamilySamples] {
        let statistics = currentStatistics
        return Exposition.families(
            SharedStreamsFigures(
                links: [
                    .init(
                        role: "commands", connected: statistics.commands.connected,
                        reconnects: statistics.commands.disconnections + statistics.commands.failedAttempts),
                    .init(
                        role: "follower", connected: statistics.follower.connected,
                        reconnects: statistics.follower.disconnections + statistics.follower.failedAttempts),
                ],
                commandCounts: statistics.commandCounts, commandSecondsSum: statistics.commandSecondsSum,
                entriesWritten: statistics.entriesWritten, entriesRead: statistics.entriesRead,
                redisTokens: statistics.redisTokens, localTokens: StreamName.all.map { log.currentToken(of: $0) },
                diverged: Set(statistics.divergedStreams), errors: statistics.errors,
                refusedWrites: statistics.refusedWrites, entriesTrimmed: statistics.entriesTrimmed,
                backfills: statistics.backfills, abortedTransactions: statistics.abortedTransactions))
    }
}
