import NIOCore
import RedisClient
@testable import RedisStreams
import ReplicationTestSupport
import XCTest

extension RedisServer {
    /// Sends one command on a connection of its own and returns its reply, parsed as the sidecar's client
    /// parses it.
    func reply(_ arguments: [ByteBuffer]) throws -> RedisValue { try replies([arguments])[0] }

    /// Sends commands back to back on one connection of their own and returns their replies.
    func replies(_ commands: [[ByteBuffer]]) throws -> [RedisValue] {
        let connection = try RedisConnection(port: port)
        defer { connection.close() }
        return try connection.send(commands)
    }

    func reply(_ arguments: [String]) throws -> RedisValue { try reply(RESPCommand.arguments(arguments)) }

    /// Every entry of `key` as its token and `rows-added`.
    func rowsAdded(_ key: String) throws -> [Int64: Int64] {
        guard case .array(let items) = try reply(["XRANGE", key, "-", "+"]) else { return [:] }
        var added: [Int64: Int64] = [:]
        for item in items {
            let (id, fields) = try XCTUnwrap(StreamEntries.entry(item))
            added[try XCTUnwrap(StreamEntries.token(ofID: id))] = fields.last?.string.flatMap { Int64($0) }
        }
        return added
    }

    /// Calls of a command Redis has run, from `INFO commandstats`.
    func calls(_ command: String) throws -> Int { try commandStatistic(command, "calls") }

    /// Calls of a command Redis refused before running it (an ACL, a wrong number of arguments).
    func rejectedCalls(_ command: String) throws -> Int { try commandStatistic(command, "rejected_calls") }

    private func commandStatistic(_ command: String, _ field: String) throws -> Int {
        let line = try cli(["INFO", "commandstats"]).split(whereSeparator: \.isNewline)
            .first { $0.hasPrefix("cmdstat_\(command):") }
        let value = line?.dropFirst("cmdstat_\(command):".count).split(separator: ",")
            .first { $0.hasPrefix("\(field)=") }?.dropFirst(field.count + 1)
        return value.flatMap { Int($0) } ?? 0
    }
}

/// One connection to the test's Redis, for commands sent in turns (a transaction ended once its check answered).
final class RedisConnection {
    private let socket: LineSocket
    private let reader = RESPReader()

    init(port: Int) throws { socket = try LineSocket(port: port) }

    func close() { socket.close() }

    /// Sends commands back to back and returns their replies.
    func send(_ commands: [[ByteBuffer]]) throws -> [RedisValue] {
        try socket.send(Array(commands.map { RESPCommand.encode($0) }.joined()))
        var replies: [RedisValue] = []
        while replies.count < commands.count {
            if let value = try reader.next() {
                replies.append(value)
            } else {
                try reader.feed(ByteBuffer(bytes: socket.readBytes(1)))
            }
        }
        return replies
    }
}
