import ArgumentParser
import Foundation

/// Which stream log a benchmarked sidecar keeps: the durable default (SQLite in a data directory, with
/// its `--sync` mode) or the in-memory log.
enum SidecarLogKind: String, CaseIterable, ExpressibleByArgument {
    case sqlite
    case memory
}

/// The options of benchmarks that start a sidecar with a log of either kind.
struct SidecarLogOptions: ParsableArguments {
    @Option(help: "Logs to measure, comma-separated: sqlite (the durable default, in --data-dir) and/or memory.")
    var log = "sqlite"

    @Option(help: "The SQLite log's --sync mode: full (the default: fsync per commit) or normal.")
    var sync = "full"

    @Option(help: "Scratch data directory of the SQLite log (emptied before each server, removed afterwards).")
    var dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("replication-bench-data-\(getpid())")
        .path

    func validate() throws {
        guard let kinds, !kinds.isEmpty else {
            throw ValidationError("--log must list sqlite and/or memory, like sqlite,memory; got '\(log)'")
        }
        guard ["full", "normal"].contains(sync) else {
            throw ValidationError("--sync must be full or normal, got '\(sync)'")
        }
    }

    var kinds: [SidecarLogKind]? {
        let parsed = log.split(separator: ",").map { SidecarLogKind(rawValue: $0.trimmingCharacters(in: .whitespaces)) }
        return parsed.contains(nil) ? nil : parsed.compactMap { $0 }
    }

    /// How a result is labelled: `sqlite full`, `memory`.
    func label(_ kind: SidecarLogKind) -> String { kind == .sqlite ? "sqlite " + sync : "memory" }

    /// The `serve` arguments choosing the log; an SQLite log starts from an empty directory unless `keep`.
    func serveArguments(_ kind: SidecarLogKind, keep: Bool = false) -> [String] {
        switch kind {
        case .memory: return ["--in-memory"]
        case .sqlite:
            if !keep { removeData() }
            return ["--data-dir", dataDir, "--sync", sync]
        }
    }

    func removeData() { try? FileManager.default.removeItem(atPath: dataDir) }
}

/// A sidecar started for a benchmark as its own process, accepting `bench-writer` as a writer.
struct BenchSidecar {
    let process: ServerProcess
    let port: Int

    /// Starts `replication-sidecar serve` with the log of `kind` and `extraArguments`; `keepData` reopens
    /// what a previous server left in the data directory.
    init(
        environment: BenchEnvironment, log kind: SidecarLogKind, options: SidecarLogOptions, retainRows: Int,
        keepData: Bool = false, extraArguments: [String] = []
    ) throws {
        port = try LoopbackSocket.freePort()
        process = try ServerProcess(
            executable: environment.sidecar,
            arguments: [
                "serve", "--host", "127.0.0.1", "--port", "\(port)", "--metrics-port", "0", "--retain-rows",
                "\(retainRows)", "--writer", "bench-writer", "--log-level", "error",
            ] + options.serveArguments(kind, keep: keepData) + extraArguments)
        try process.waitUntilListening(port: port)
    }
}
