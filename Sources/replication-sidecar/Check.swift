import ArgumentParser
import StreamLog

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the stream log of a data directory for damage, without changing it.",
        discussion: """
            Runs SQLite's integrity check over every page, then reads every row: a stream this build knows, \
            a token no later than its stream's head, a JSON array as wide as the stream's rows. Prints what \
            is damaged and exits 1, or exits 0 when the log is sound. Safe to run beside a running server.
            """
    )

    @Option(help: "Directory of the durable stream log.")
    var dataDir = "./replication-data"

    func run() throws {
        let check = StreamLogCheck(directory: dataDir)
        guard check.isHealthy else {
            for problem in check.problems { print(problem) }
            if check.unlistedProblems > 0 { print("… and \(check.unlistedProblems) more problems") }
            print("the stream log in \(dataDir) is damaged: see README, 'A damaged stream log'")
            throw ExitCode.failure
        }
        print("the stream log in \(dataDir) is sound: \(check.streamCount) streams, \(check.rowCount) rows")
    }
}
