import ArgumentParser
import Foundation
import ReplicationCore

/// The line codec alone, in MB/s of RDATA lines: decoding as the server reads a writer's lines (the
/// connection state machine, with JSON validation), and encoding commands back to lines. Beside it,
/// Synapse 1.6.1's own command classes on the same lines, in the same run.
struct CodecBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "codec", abstract: "Line codec throughput in MB/s, ours beside Synapse 1.6.1's.")

    @Option(help: "RDATA lines to decode and encode.")
    var lines = 200_000

    @Option(help: "Rounds; the best one counts.")
    var rounds = 5

    @OptionGroup var synapse: SynapseOptions

    func run() throws {
        let payload = FanoutPayload(rows: lines)
        let megabytes = Double(payload.bytes.count) / 1_000_000
        let texts = String(decoding: payload.bytes, as: UTF8.self).split(separator: "\n")
        var commands: [Command] = []
        var decodeSeconds = Double.infinity
        for _ in 0..<rounds {
            var machine = ServerConnectionStateMachine(
                serverName: "bench", writers: ["bench-writer"], configuration: ProtocolConfiguration(), now: 0)
            _ = machine.lineReceived("NAME bench-writer", now: 0)
            var decoded: [Command] = []
            decoded.reserveCapacity(texts.count)
            let started = monotonicNow()
            for line in texts {
                guard case .dispatch(let command) = machine.lineReceived(line, now: 0) else {
                    throw ValidationError("a benchmark line did not decode: \(line)")
                }
                decoded.append(command)
            }
            decodeSeconds = min(decodeSeconds, monotonicNow() - started)
            commands = decoded
        }
        var encodeSeconds = Double.infinity
        for _ in 0..<rounds {
            var bytes = 0
            let started = monotonicNow()
            for command in commands { bytes += CommandCodec.line(for: command, maxLength: 16_384)!.utf8.count + 1 }
            encodeSeconds = min(encodeSeconds, monotonicNow() - started)
            guard bytes == payload.bytes.count else { throw ValidationError("encoding changed the lines") }
        }
        print(String(format: "line codec, %d RDATA lines (%.1f MB), best of %d:", lines, megabytes, rounds))
        print(String(format: "  ours           decode %7.1f MB/s   encode %7.1f MB/s", megabytes / decodeSeconds, megabytes / encodeSeconds))
        guard !synapse.withoutSynapse else { return }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("codec-\(getpid()).txt")
        try Data(payload.bytes).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let environment = synapse.environment
        let python = try ServerProcess(
            executable: environment.python, arguments: [environment.script("synapse_codec_speed.py"), file.path, "\(rounds)"],
            currentDirectory: synapse.packageRoot)
        defer { python.stop() }
        let figures = try python.readLine(startingWith: "SECONDS ", timeout: 300).split(separator: " ").compactMap { Double($0) }
        guard figures.count == 2 else { throw ValidationError("synapse_codec_speed.py printed no figures") }
        print(String(format: "  synapse 1.6.1  decode %7.1f MB/s   encode %7.1f MB/s", megabytes / figures[0], megabytes / figures[1]))
        print(String(format: "  ratio ours/synapse: decode %.1fx, encode %.1fx", figures[0] / decodeSeconds, figures[1] / encodeSeconds))
    }
}
