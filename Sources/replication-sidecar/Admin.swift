import ArgumentParser
import ReplicationCore
import StreamLog

struct Admin: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the streams of a data directory's stream log, or move a stream's head back.",
        subcommands: [Show.self, SetHead.self]
    )

    /// Given before the subcommand (`admin --data-dir D show`) or after it.
    @OptionGroup var location: Location

    struct Location: ParsableArguments {
        @Option(help: "Directory of the durable stream log.")
        var dataDir = "./replication-data"
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print every stream's head token, oldest servable token and row count.",
            discussion: "Opens the log read-only: safe beside a running server."
        )

        @OptionGroup var location: Location

        func run() throws {
            let streams: [StreamLogAdmin.StreamState]
            do {
                streams = try StreamLogAdmin.streams(directory: location.dataDir)
            } catch {
                status("\(error)")
                throw ExitCode.failure
            }
            let table =
                [["stream", "head", "oldest", "rows"]]
                + streams.map { [$0.stream.rawValue, String($0.head), String($0.oldestServable), String($0.rows)] }
            let widths = (0..<4).map { column in table.map { $0[column].count }.max()! }
            for row in table {
                let name = row[0].padding(toLength: widths[0], withPad: " ", startingAt: 0)
                let numbers = (1..<4).map { String(repeating: " ", count: widths[$0] - row[$0].count) + row[$0] }
                print(([name] + numbers).joined(separator: "  "))
            }
        }
    }

    struct SetHead: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a stream's head back to TOKEN, removing its rows after TOKEN (server stopped).",
            discussion: """
                Repairs a stream a writer moved to a token it should not have: the next writer's token need \
                only be greater than TOKEN again. Refused while the log is in use: stop the server first. \
                Workers that saw rows after TOKEN have to be restarted; a writer goes on after TOKEN.
                """
        )

        @OptionGroup var location: Location

        @Argument(help: "The stream, as named on the wire (events, caches, typing, ...).")
        var stream: String

        @Argument(help: "Its new head token: rows after it are removed.")
        var token: Int64

        func validate() throws {
            guard StreamName(stream) != nil else {
                throw ValidationError(
                    "unknown stream '\(stream)': one of \(StreamName.all.map(\.rawValue).joined(separator: ", "))")
            }
        }

        func run() throws {
            let moved: StreamLogAdmin.HeadMoved
            do {
                moved = try StreamLogAdmin.setHead(directory: location.dataDir, stream: StreamName(stream)!, to: token)
            } catch {
                status("\(error)")
                throw ExitCode.failure
            }
            guard moved.previousHead != token else {
                print("stream \(stream) is already at \(token): nothing changed")
                return
            }
            let removed = "\(moved.rowsRemoved) rows removed"
            print("stream \(stream): head moved from \(moved.previousHead) to \(token), \(removed)")
        }
    }
}
