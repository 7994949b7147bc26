// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "replication-sidecar",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "replication-sidecar", targets: ["replication-sidecar"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections", exact: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", exact: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", exact: "2.37.6"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
    ],
    targets: [
        // Protocol rules with no I/O: commands, streams, state machines. Imports nothing of ours.
        .target(name: "ReplicationCore"),
        .systemLibrary(name: "CCrypt", pkgConfig: "libxcrypt", providers: [.apt(["libcrypt-dev"])]),
        // Password hashes (bcrypt, through libxcrypt) and the NAME:HASH files that hold them.
        .target(name: "Credentials", dependencies: ["CCrypt"]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // The ordered per-stream log that catch-up and fan-out read from: SQLite on disk, or in memory.
        .target(
            name: "StreamLog",
            dependencies: [
                "ReplicationCore",
                "CSQLite",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        // What every TLS client here does alike: TLS 1.2 at least, a PEM trust file, SNI for host names only.
        .target(
            name: "TLSClientSetup",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // Everything that touches a socket.
        .target(
            name: "ReplicationNIO",
            dependencies: [
                "ReplicationCore",
                "StreamLog",
                "CSocketQueues",
                "Credentials",
                "TLSClientSetup",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Relay mode: one upstream connection feeding the log, workers' commands forwarded to it.
        .target(
            name: "ReplicationRelay",
            dependencies: [
                "ReplicationCore",
                "StreamLog",
                "ReplicationNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // ioctl(SIOCINQ/SIOCOUTQ) behind non-variadic functions.
        .target(name: "CSocketQueues"),
        // hiredis: the reference that RESPTests hold our RESP encoder and reader to. Its header is found as
        // <hiredis/hiredis.h> without pkg-config, whose -D_FILE_OFFSET_BITS SwiftPM refuses with a warning.
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        // A Redis client: pipelining, AUTH/SELECT, subscriptions, timeouts, reconnection with back-off.
        .target(
            name: "RedisClient",
            dependencies: [
                "ReplicationCore",
                "TLSClientSetup",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Sidecars on many hosts as one hub: the streams kept in Redis, written by a Lua script, followed with XREAD.
        .target(
            name: "RedisStreams",
            dependencies: [
                "ReplicationCore",
                "StreamLog",
                "ReplicationNIO",
                "RedisClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Watching today's Synapse replicate over Redis: the bus observed, exported as metrics.
        .target(
            name: "BusObserver",
            dependencies: [
                "ReplicationCore",
                "ReplicationNIO",
                "RedisClient",
                "ReplicationMetrics",
                "MetricsExporter",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .systemLibrary(
            name: "CMicroHTTPD", pkgConfig: "libmicrohttpd", providers: [.apt(["libmicrohttpd-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // The git revision being built, for --version and replication_sidecar_build_info.
        .plugin(name: "RevisionPlugin", capability: .buildTool()),
        // Metric names and help texts, and the exposition of a snapshot. Never imports NIO.
        .target(name: "ReplicationMetrics", dependencies: ["ReplicationCore"], plugins: ["RevisionPlugin"]),
        // The HTTP endpoint on libmicrohttpd.
        .target(
            name: "MetricsExporter",
            dependencies: [
                "CMicroHTTPD", "CZlib", "Credentials", .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Glue between the running server and the metrics endpoint: snapshots in, exposition out.
        .target(
            name: "SidecarMetrics",
            dependencies: [
                "ReplicationCore",
                "ReplicationNIO",
                "ReplicationMetrics",
                "MetricsExporter",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Log lines in logfmt or JSON (--log-format).
        .target(name: "SidecarLogging", dependencies: [.product(name: "Logging", package: "swift-log")]),
        .executableTarget(
            name: "replication-sidecar",
            dependencies: [
                "ReplicationCore",
                "ReplicationMetrics",
                "SidecarLogging",
                "StreamLog",
                "ReplicationNIO",
                "ReplicationRelay",
                "MetricsExporter",
                "SidecarMetrics",
                "RedisClient",
                "RedisStreams",
                "BusObserver",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                "Credentials",
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        // Helpers shared by the test targets: a blocking line socket and a server fixture on loopback.
        .target(
            name: "ReplicationTestSupport",
            dependencies: [
                "ReplicationNIO",
                "ReplicationRelay",
                "StreamLog",
                "ReplicationCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/ReplicationTestSupport"
        ),
        // Benchmarks: commands that print figures (run them built with -c release).
        .executableTarget(
            name: "replication-bench",
            dependencies: [
                "ReplicationCore",
                "StreamLog",
                "ReplicationNIO",
                "MetricsExporter",
                "ReplicationMetrics",
                "SidecarMetrics",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Fuzz targets for the parsers of network input (Tests/fuzz.sh builds them with libFuzzer).
        .executableTarget(
            name: "replication-fuzz",
            dependencies: [
                "ReplicationCore", "ReplicationNIO", "RedisClient", "Credentials",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "ReplicationCoreTests", dependencies: ["ReplicationCore"]),
        .testTarget(name: "CredentialsTests", dependencies: ["Credentials", "ReplicationTestSupport"]),
        .testTarget(
            name: "SidecarLoggingTests",
            dependencies: ["SidecarLogging", .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "ReplicationRelayTests",
            dependencies: ["ReplicationRelay", "ReplicationNIO", "StreamLog", "ReplicationCore", "ReplicationTestSupport"]
        ),
        .testTarget(name: "InteropTests", dependencies: ["ReplicationTestSupport"]),
        .testTarget(
            name: "RedisClientTests",
            dependencies: [
                "RedisClient", "CHiredis", "ReplicationTestSupport", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "RedisStreamsTests",
            dependencies: [
                "RedisStreams", "RedisClient", "ReplicationCore", "ReplicationNIO", "StreamLog",
                "ReplicationTestSupport", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "BusObserverTests",
            dependencies: [
                "BusObserver", "RedisClient", "ReplicationCore", "ReplicationMetrics", "ReplicationNIO",
                "ReplicationTestSupport", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "DeploymentTests",
            dependencies: [
                "ReplicationTestSupport", "ReplicationMetrics", "ReplicationNIO", "MetricsExporter", "SidecarMetrics",
                "StreamLog", "ReplicationCore",
            ]
        ),
        .testTarget(
            name: "ReplicationMetricsTests", dependencies: ["ReplicationMetrics", "ReplicationCore", "ReplicationTestSupport"],
            exclude: ["Golden"]),
        .testTarget(
            name: "MetricsExporterTests",
            dependencies: [
                "MetricsExporter", "ReplicationMetrics", "ReplicationCore", "ReplicationNIO", "SidecarMetrics",
                "ReplicationTestSupport", "CSocketQueues", "Credentials", .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "StreamLogTests",
            dependencies: [
                "StreamLog",
                "ReplicationCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "ReplicationNIOTests",
            dependencies: [
                "ReplicationNIO",
                "Credentials",
                "StreamLog",
                "ReplicationCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                "ReplicationTestSupport",
            ]
        ),
    ]
)
