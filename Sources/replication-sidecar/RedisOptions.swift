import ArgumentParser
import Foundation
import RedisClient

/// `--redis URL`, `--redis-password-file` and `--redis-ca`, for `serve`, `observe` and `tail --redis`.
struct RedisOptions: ParsableArguments {
    @Option(
        help: "The Redis Synapse replicates over: redis://[[user]:password@]host[:port][/db] (rediss:// for TLS).")
    var redis: String?

    @Option(help: "A file whose first line is the Redis password (overrides one in --redis).")
    var redisPasswordFile: String?

    @Option(help: "PEM file of the CA that signed a rediss:// server's certificate (default: the system's roots).")
    var redisCa: String?

    func validate() throws {
        if redis == nil, redisPasswordFile != nil || redisCa != nil {
            throw ValidationError("--redis-password-file and --redis-ca need --redis URL")
        }
        if redis != nil { _ = try endpoint() }
    }

    /// The endpoint to connect to; a bad URL or unreadable password file is a validation error.
    func endpoint() throws -> RedisEndpoint {
        guard let redis else { throw ValidationError("--redis URL is required") }
        var endpoint: RedisEndpoint
        do {
            endpoint = try RedisEndpoint(url: redis)
            if let redisPasswordFile {
                guard let contents = try? String(contentsOfFile: redisPasswordFile, encoding: .utf8) else {
                    throw ValidationError("--redis-password-file: cannot read '\(redisPasswordFile)'")
                }
                endpoint = try endpoint.withPassword(fileContents: contents)
            }
        } catch let error as RedisURLError {
            throw ValidationError("--redis: \(error)")
        }
        guard let redisCa else { return endpoint }
        do {
            return try endpoint.withCertificateAuthority(file: redisCa)
        } catch {
            throw ValidationError("--redis-ca: \(error)")
        }
    }
}
