import BusObserver
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import RedisClient
import ReplicationCore
import ServiceLifecycle

/// `tail --redis`: prints what flows on Synapse's Redis bus as JSON lines until SIGTERM or SIGINT.
func tailBus(endpoint: RedisEndpoint, serverName: String, streams: Set<String>?, commands: Bool) async throws {
    var logger = Logger(label: "replication-sidecar")
    logger.logLevel = .error
    let printer = BusPrinter(streams: streams, commands: commands)
    let observer = SynapseBusObserver(
        configuration: ObserverConfiguration(endpoint: endpoint, serverName: serverName, probeIntervalMillis: 0),
        eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger
    ) { message, parsed in
        printer.print(message, parsed)
    } onConnection: { connected, retryInMillis, reason in
        if connected {
            status("subscribed to \(serverName) and \(serverName)/USER_IP on \(endpoint)")
        } else if let retryInMillis {
            status("\(reason ?? "Redis connection lost"); reconnecting in \(retryInMillis) ms")
        }
    }
    let group = ServiceGroup(
        configuration: .init(services: [.init(service: BusObserverService(observer: observer))], logger: logger))
    try await ShutdownSignals.trap().run(group, logger: logger)
}

/// Turns bus messages into JSON lines; batch rows wait for the row whose token closes them.
final class BusPrinter: Sendable {
    private let streams: Set<String>?
    private let commands: Bool
    private let batches = NIOLockedValueBox([BusObservation.Writer: [String]]())

    init(streams: Set<String>?, commands: Bool) {
        self.streams = streams
        self.commands = commands
    }

    func print(_ message: RedisMessage, _ parsed: Result<BusCommand, BusMalformedReason>) {
        var out = ""
        switch parsed {
        case .success(.rdata(let stream, let instance, let token, let row)):
            guard streams?.contains(stream) ?? true else { return }
            let writer = BusObservation.Writer(stream: stream, instance: instance)
            guard let token else {
                batches.withLockedValue { $0[writer, default: []].append(row) }
                return
            }
            let rows = batches.withLockedValue { $0.removeValue(forKey: writer) ?? [] } + [row]
            for row in rows {
                out += "{\"stream\": \(JSONText.string(stream)), \"instance\": \(JSONText.string(instance)), "
                out += "\"token\": \(token), \"row\": \(row)}\n"
            }
        case .success(let command):
            guard commands else { return }
            let arguments = String(decoding: message.payload, as: UTF8.self).dropFirst(command.name.rawValue.count + 1)
            out = "{\"command\": \"\(command.name.rawValue)\", \"arguments\": \(JSONText.string(String(arguments)))}\n"
        case .failure(let reason):
            guard commands else { return }
            let text = String(decoding: message.payload, as: UTF8.self)
            out = "{\"malformed\": \"\(reason.rawValue)\", \"message\": \(JSONText.string(text))}\n"
        }
        FileHandle.standardOutput.write(Data(out.utf8))
    }
}
