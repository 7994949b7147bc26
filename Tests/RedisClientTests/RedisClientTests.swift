import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RedisClient
import ReplicationTestSupport
import Testing

/// Records what a client reports; read from the test's thread.
final class RecordingDelegate: RedisClientDelegate, Sendable {
    private let state = NIOLockedValueBox((messages: [RedisMessage](), events: [(Bool, Int64?, String?)]()))

    var messages: [RedisMessage] { state.withLockedValue { $0.messages } }
    var events: [(connected: Bool, retry: Int64?, reason: String?)] { state.withLockedValue { $0.events } }
    var readyCount: Int { events.filter(\.connected).count }

    func redisClient(received message: RedisMessage) { state.withLockedValue { $0.messages.append(message) } }

    func redisClient(connected: Bool, retryInMillis: Int64?, reason: String?) {
        state.withLockedValue { $0.events.append((connected, retryInMillis, reason)) }
    }
}

/// A client on one event loop, driven from the test.
final class LoopClient: @unchecked Sendable {  // the client is only touched on its loop
    let loop = MultiThreadedEventLoopGroup.singleton.next()
    let delegate = RecordingDelegate()
    private var client: RedisClient!

    init(_ configuration: RedisClientConfiguration, random: @escaping @Sendable () -> Double = { 0 }) throws {
        try loop.submit {
            var logger = Logger(label: "redis-test")
            logger.logLevel = .critical
            self.client = RedisClient(
                configuration: configuration, eventLoop: self.loop, delegate: self.delegate, random: random,
                logger: logger)
            self.client.start()
        }.wait()
    }

    func send(_ arguments: [String]) async throws -> RedisValue {
        try await loop.flatSubmit { self.client.send(arguments) }.get()
    }

    func pipeline(_ commands: [[String]]) async throws -> [RedisValue] {
        let futures = try await loop.submit { self.client.pipeline(commands.map(RESPCommand.arguments)) }.get()
        var values: [RedisValue] = []
        for future in futures { values.append(try await future.get()) }
        return values
    }

    var statistics: RedisConnectionStatistics { get throws { try loop.submit { self.client.statistics }.wait() } }
    var isReady: Bool { (try? loop.submit { self.client.isReady }.wait()) ?? false }

    func stop() { try? loop.submit { self.client.stop() }.wait() }

    func waitUntilReady(_ count: Int = 1) async throws {
        try await waitUntil(seconds: 15) { delegate.readyCount >= count && isReady }
    }
}

@Suite(.serialized) struct RedisClientTests {
    @Test func pipelinedCommandsGetTheirOwnRepliesInOrder() async throws {
        let redis = try RedisServer()
        let client = try LoopClient(RedisClientConfiguration(endpoint: try RedisEndpoint(url: redis.url)))
        defer { client.stop() }
        try await client.waitUntilReady()
        let commands = (0..<1000).flatMap { [["SET", "k\($0)", "v\($0)"], ["GET", "k\($0)"]] }
        let replies = try await client.pipeline(commands + [["INCRBY", "n", "7"], ["LPUSH"]].map { $0 }.prefix(1))
        for index in 0..<1000 {
            #expect(replies[2 * index] == .simpleString("OK"))
            #expect(replies[2 * index + 1] == .bulkString(ByteBuffer(string: "v\(index)")))
        }
        #expect(replies.last == .integer(7))
        await #expect(throws: RedisError.server("ERR wrong number of arguments for 'lpush' command")) {
            try await client.send(["LPUSH"])
        }
        #expect(try await client.send(["GET", "k999"]) == .bulkString(ByteBuffer(string: "v999")))
        #expect(try client.statistics.failedCommands == 1)
    }

    @Test func logsInWithThePasswordAndSelectsTheDatabase() async throws {
        let redis = try RedisServer(password: "pa ss")
        let client = try LoopClient(
            RedisClientConfiguration(endpoint: try RedisEndpoint(url: "redis://:pa%20ss@127.0.0.1:\(redis.port)/3")))
        defer { client.stop() }
        try await client.waitUntilReady()
        _ = try await client.send(["SET", "where", "three"])
        #expect(try redis.cli(["-n", "3", "GET", "where"]) == "three\n")
        #expect(try redis.cli(["-n", "0", "EXISTS", "where"]) == "0\n")
    }

    @Test func aWrongPasswordIsRetriedWithBackOffAndReported() async throws {
        let redis = try RedisServer(password: "right")
        let client = try LoopClient(
            RedisClientConfiguration(endpoint: try RedisEndpoint(url: "redis://:wrong@127.0.0.1:\(redis.port)")),
            random: { 1 })
        defer { client.stop() }
        try await waitUntil(seconds: 15) { client.delegate.events.count >= 2 }
        let events = client.delegate.events
        #expect(events.allSatisfy { !$0.connected })
        // 1 s then ×e, each +12 % (the jitter at its maximum).
        #expect(events.prefix(2).map(\.retry) == [1_120, 3_044])
        #expect(
            events[0].reason?.contains("WRONGPASS") == true || events[0].reason?.contains("invalid password") == true,
            "\(events[0])")
        #expect(try client.statistics.failedAttempts >= 2)
        await #expect(throws: RedisError.notConnected) { try await client.send(["PING"]) }
    }

    @Test func subscriptionsDeliverMessagesAndAreRenewedAfterARedisRestart() async throws {
        let redis = try RedisServer()
        let subscriber = try LoopClient(
            RedisClientConfiguration(
                endpoint: try RedisEndpoint(url: redis.url), channels: ["a.example", "a.example/USER_IP"]))
        defer { subscriber.stop() }
        try await subscriber.waitUntilReady()
        #expect(try redis.cli(["PUBLISH", "a.example", "RDATA events master 1 []"]) == "1\n")
        #expect(try redis.cli(["PUBLISH", "a.example/USER_IP", "USER_IP @u:a []"]) == "1\n")
        #expect(try redis.cli(["PUBLISH", "other", "ignored"]) == "0\n")
        try await waitUntil { subscriber.delegate.messages.count == 2 }
        #expect(
            subscriber.delegate.messages == [
                RedisMessage(channel: "a.example", payload: Array("RDATA events master 1 []".utf8)),
                RedisMessage(channel: "a.example/USER_IP", payload: Array("USER_IP @u:a []".utf8)),
            ])

        redis.stop()
        try await waitUntil(seconds: 15) { subscriber.delegate.events.contains { !$0.connected } }
        try redis.start()
        try await subscriber.waitUntilReady(2)
        try await waitUntil(seconds: 15) { (try? redis.cli(["PUBLISH", "a.example", "again"])) == "1\n" }
        try await waitUntil { subscriber.delegate.messages.last?.payload == Array("again".utf8) }
        let statistics = try subscriber.statistics
        #expect(statistics.connections == 2 && statistics.disconnections == 1)
        #expect(statistics.messages == subscriber.delegate.messages.count)
    }

    @Test func aCommandThatTimesOutClosesTheConnectionWhichComesBack() async throws {
        let redis = try RedisServer()
        let client = try LoopClient(
            RedisClientConfiguration(endpoint: try RedisEndpoint(url: redis.url), commandTimeout: .milliseconds(200)))
        defer { client.stop() }
        try await client.waitUntilReady()
        await #expect(throws: RedisError.timedOut) { try await client.send(["DEBUG", "SLEEP", "1"]) }
        try await client.waitUntilReady(2)
        #expect(try await client.send(["PING"]) == .simpleString("PONG"))
    }
}

/// `rediss://`: a real redis-server serving TLS only, with certificates made for the test.
@Suite(.serialized) struct RedisTLSTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("redis-tls-\(UUID().uuidString)").path

    @Test func commandsAndSubscriptionsGoOverTLSCheckedAgainstTheCA() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try TestCertificates(in: directory)
        let redis = try RedisServer(password: "tls-secret", tls: certificates)
        let endpoint = try RedisEndpoint(url: redis.url).withCertificateAuthority(file: certificates.caCertificate)
        #expect(endpoint.description == "rediss://:***@127.0.0.1:\(redis.port)/0")
        let client = try LoopClient(RedisClientConfiguration(endpoint: endpoint, channels: ["news"]))
        defer { client.stop() }
        try await client.waitUntilReady()
        try redis.cli(["PUBLISH", "news", "over tls"])
        try await waitUntil(seconds: 30) { client.delegate.messages.count == 1 }
        #expect(client.delegate.messages.first?.payload == Array("over tls".utf8))
    }

    @Test func aServerCertificateFromAnotherCAIsRefusedWithTheReason() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try TestCertificates(in: directory + "/server")
        let otherCA = try TestCertificates(in: directory + "/other")
        let redis = try RedisServer(tls: certificates)
        let endpoint = try RedisEndpoint(url: redis.url).withCertificateAuthority(file: otherCA.caCertificate)
        let reason = try await refusal(of: endpoint)
        #expect(reason.contains("CERTIFICATE_VERIFY_FAILED"), "\(reason)")
    }

    /// Why a client of `endpoint` could not get ready: its first event, which must be a failed connection.
    func refusal(of endpoint: RedisEndpoint) async throws -> String {
        let client = try LoopClient(RedisClientConfiguration(endpoint: endpoint))
        defer { client.stop() }
        try await waitUntil(seconds: 30) { !client.delegate.events.isEmpty }
        let event = try #require(client.delegate.events.first)
        #expect(!event.connected && !client.isReady)
        return event.reason ?? ""
    }

    /// A host name is sent (SNI) and checked as a name; an address literal has none to send and is checked as
    /// an address: a certificate naming only localhost is trusted over localhost and refused over 127.0.0.1.
    @Test func aHostNameIsCheckedAsANameAndAnAddressAsAnAddress() async throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try TestCertificates(in: directory, serverNames: "DNS:localhost")
        let redis = try RedisServer(tls: certificates)
        let byAddress = try RedisEndpoint(url: redis.url).withCertificateAuthority(file: certificates.caCertificate)
        var byName = byAddress
        byName.host = "localhost"
        let trusted = try LoopClient(RedisClientConfiguration(endpoint: byName))
        defer { trusted.stop() }
        try await trusted.waitUntilReady()

        let reason = try await refusal(of: byAddress)
        #expect(reason.contains("failedToValidateHostname"), "\(reason)")
    }

    @Test func aCAFileIsForRedissOnlyAndMustHoldCertificates() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(throws: RedisTLSError(description: "a CA file needs a rediss:// URL (TLS)")) {
            try RedisEndpoint(url: "redis://127.0.0.1:6379").withCertificateAuthority(file: "/etc/hostname")
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let notPEM = directory + "/not.pem"
        try "not a certificate".write(toFile: notPEM, atomically: true, encoding: .utf8)
        #expect {
            try RedisEndpoint(url: "rediss://127.0.0.1:6380").withCertificateAuthority(file: notPEM)
        } throws: { error in
            "\(error)".contains("cannot read the CA certificates in '\(notPEM)'")
        }
        #expect(
            try RedisEndpoint(url: "rediss://h:1/2")
                == RedisEndpoint(host: "h", port: 1, database: 2, tls: RedisTLS(certificateAuthority: nil)))
    }
}
