import Credentials
import NIOCore
import NIOSSL
import ReplicationCore

/// Everything the replication server is started with, defaults written out once.
public struct ServerConfiguration: Sendable {
    /// Address of the TCP listener; loopback unless told otherwise.
    public var host: String
    /// Port of the TCP listener; `0` picks a free port.
    public var port: Int
    /// Sent in `SERVER`; workers compare it with the name they expect.
    public var serverName: String
    /// Client names (`NAME`) that may publish rows with `RDATA` and `POSITION`.
    public var writers: Set<String>
    /// Writers that must send `AUTH <secret>` matching their hash here before they may write.
    public var writerCredentials: CredentialsFile?
    /// A second listener on `host` that speaks TLS, and its context.
    public var tls: (port: Int, context: NIOSSLContext)?
    /// Peers that may connect; empty: anyone who can reach the port.
    public var allowFrom: [AddressRange]
    /// Connections served at once; more are closed at accept.
    public var maxConnections: Int?
    /// How long a wrong `AUTH` waits for its `ERROR`: a guesser gets one try per connection and delay.
    public var authenticationFailureDelay: TimeAmount
    public var protocolLimits: ProtocolConfiguration
    /// Bytes of catch-up read from the log and written in one go before writability is checked again.
    public var catchUpPageBytes: Int
    /// Write-buffer water marks: above `high` a connection is paused, below `low` it resumes.
    /// Synapse paused at 64 KiB of user-space buffer.
    public var writeBufferLowWater: Int
    public var writeBufferHighWater: Int
    /// `SO_SNDBUF` for worker connections; `nil` leaves the kernel's autotuning (which can hold megabytes
    /// per connection before the server sees back-pressure).
    public var socketSendBuffer: Int?
    /// How long shutdown waits for connections to take their `ERROR` and go, before closing them.
    public var shutdownGrace: TimeAmount
    /// Alike connection lines (opened, closed for one reason, …) logged per interval; more are summarised.
    public var connectionLinesPerInterval = 20
    public var connectionLogInterval = TimeAmount.seconds(10)

    public init(
        host: String = "127.0.0.1",
        port: Int = 9092,
        serverName: String = "localhost",
        writers: Set<String> = [],
        writerCredentials: CredentialsFile? = nil,
        authenticationFailureDelay: TimeAmount = .seconds(1),
        tls: (port: Int, context: NIOSSLContext)? = nil,
        allowFrom: [AddressRange] = [],
        maxConnections: Int? = nil,
        protocolLimits: ProtocolConfiguration = ProtocolConfiguration(),
        catchUpPageBytes: Int = 256 * 1024,
        writeBufferLowWater: Int = 32 * 1024,
        writeBufferHighWater: Int = 64 * 1024,
        socketSendBuffer: Int? = nil,
        shutdownGrace: TimeAmount = .seconds(5)
    ) {
        self.host = host
        self.port = port
        self.serverName = serverName
        self.writers = writers
        self.writerCredentials = writerCredentials
        self.authenticationFailureDelay = authenticationFailureDelay
        self.tls = tls
        self.allowFrom = allowFrom
        self.maxConnections = maxConnections
        self.protocolLimits = protocolLimits
        self.catchUpPageBytes = catchUpPageBytes
        self.writeBufferLowWater = writeBufferLowWater
        self.writeBufferHighWater = writeBufferHighWater
        self.socketSendBuffer = socketSendBuffer
        self.shutdownGrace = shutdownGrace
    }
}

extension ServerConfiguration {
    /// The session of a connection accepted now, its commands routed by `routing`.
    func session(routing: any CommandRouting, now: Int64) -> ServerSession<ByteBuffer> {
        ServerSession(
            serverName: serverName, writers: writers,
            writersWithCredentials: writerCredentials.map { Set($0.hashes.keys) } ?? [],
            configuration: protocolLimits, routing: routing, now: now)
    }
}
