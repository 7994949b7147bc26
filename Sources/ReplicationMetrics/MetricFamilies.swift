/// Every metric family this server exports: name, type and help text, defined once.
///
/// The `synapse_replication_tcp_*` families are Synapse 1.6's, with its names, types and labels, so that
/// existing dashboards keep working; the `replication_sidecar_*` families are this project's additions.
public struct MetricFamily: Sendable, Equatable {
    public enum Kind: String, Sendable { case gauge, counter, histogram }

    /// The name without the `_total` suffix counters carry on their samples.
    public let name: String
    public let kind: Kind
    public let help: String

    /// The sample name: counters end in `_total`.
    public var sampleName: String { kind == .counter ? name + "_total" : name }
}

public enum MetricFamilies {
    /// Every family this server may export.
    public static let all: [MetricFamily] = [
        pendingCommands, transportSendBuffer, kernelSendBuffer, kernelReadBuffer, inboundCommands, outboundCommands,
        inboundCommandsTotal, outboundCommandsTotal, closeReason, inboundRDATA, streamUpdates, userSync, federationAck, removePusher, invalidateCache, userIPCache,
        totalConnections, connectionsPerStream, streamHeadToken, sentToken, lagTokens, syncingUsers,
        lastFederationAck, connectionStartTime, writerAppends, writerRejections, writerResentBatches, storageReadErrors, scrapeDuration, scrapeErrors,
        slowHTTPClientsClosed, processCPU,
        processResident, processVirtual, processOpenFDs, processMaxFDs, processStart, upstreamConnected,
        upstreamReconnects, upstreamReceivedToken, upstreamLagTokens, upstreamForwarded, upstreamQueued,
        upstreamDropped, upstreamBackfills, buildInfo,
    ]

    static let synapse = "synapse_replication_tcp_"
    static let ours = "replication_sidecar_"

    // Per connection, computed at scrape time (Synapse's LaterGauges), labelled by connection name.
    public static let pendingCommands = MetricFamily(
        name: synapse + "protocol_pending_commands", kind: .gauge,
        help: "Commands queued while the connection is paused (closed at the pending-command limit).")
    public static let transportSendBuffer = MetricFamily(
        name: synapse + "protocol_transport_send_buffer", kind: .gauge,
        help: "Bytes buffered in user space by the transport, not yet handed to the kernel.")
    public static let kernelSendBuffer = MetricFamily(
        name: synapse + "protocol_transport_kernel_send_buffer", kind: .gauge,
        help: "Bytes in the kernel's send queue not yet acknowledged by the peer (SIOCOUTQ).")
    public static let kernelReadBuffer = MetricFamily(
        name: synapse + "protocol_transport_kernel_read_buffer", kind: .gauge,
        help: "Bytes in the kernel's receive queue not yet read by the server (SIOCINQ).")
    public static let inboundCommands = MetricFamily(
        name: synapse + "protocol_inbound_commands", kind: .gauge,
        help: "Commands received on live connections, by command.")
    public static let outboundCommands = MetricFamily(
        name: synapse + "protocol_outbound_commands", kind: .gauge,
        help: "Commands sent on live connections, by command.")
    public static let closeReason = MetricFamily(
        name: synapse + "protocol_close_reason", kind: .counter, help: "Connections ended, by how they ended.")
    /// Synapse's client-side counter: a relay counts the `RDATA` its upstream sends.
    public static let inboundRDATA = MetricFamily(
        name: synapse + "protocol_inbound_rdata_count", kind: .counter,
        help: "RDATA commands received from the upstream, by stream.")

    // Server-wide (Synapse's resource.py).
    public static let streamUpdates = MetricFamily(
        name: synapse + "resource_stream_updates", kind: .counter, help: "Rows appended to each stream.")
    public static let userSync = MetricFamily(
        name: synapse + "resource_user_sync", kind: .counter, help: "USER_SYNC commands received.")
    public static let federationAck = MetricFamily(
        name: synapse + "resource_federation_ack", kind: .counter, help: "FEDERATION_ACK commands received.")
    public static let removePusher = MetricFamily(
        name: synapse + "resource_remove_pusher", kind: .counter, help: "REMOVE_PUSHER commands received.")
    public static let invalidateCache = MetricFamily(
        name: synapse + "resource_invalidate_cache", kind: .counter, help: "INVALIDATE_CACHE commands received.")
    public static let userIPCache = MetricFamily(
        name: synapse + "resource_user_ip_cache", kind: .counter, help: "USER_IP commands received.")
    public static let totalConnections = MetricFamily(
        name: synapse + "resource_total_connections", kind: .gauge, help: "Open replication connections.")
    public static let connectionsPerStream = MetricFamily(
        name: synapse + "resource_connections_per_stream", kind: .gauge,
        help: "Connections subscribed to each stream.")

    // This project's additions.
    public static let streamHeadToken = MetricFamily(
        name: ours + "stream_head_token", kind: .gauge, help: "The current token of each stream.")
    public static let sentToken = MetricFamily(
        name: ours + "connection_sent_token", kind: .gauge,
        help: "The last token written to a connection per stream (the lowest, for connections sharing a name).")
    public static let lagTokens = MetricFamily(
        name: ours + "connection_lag_tokens", kind: .gauge,
        help: "Stream head token minus the token last written to the connection (the largest per name).")
    public static let syncingUsers = MetricFamily(
        name: ours + "syncing_users", kind: .gauge, help: "Users a connection reported as syncing (USER_SYNC).")
    public static let lastFederationAck = MetricFamily(
        name: ours + "last_federation_ack_token", kind: .gauge, help: "The token of the last FEDERATION_ACK.")
    public static let connectionStartTime = MetricFamily(
        name: ours + "connection_start_time_seconds", kind: .gauge,
        help: "When the connection opened, in seconds since the epoch (the oldest, for connections sharing a name).")
    // Monotonic beside Synapse's gauges above: kept after a connection closes, so rate() sees no reset.
    public static let inboundCommandsTotal = MetricFamily(
        name: ours + "inbound_commands", kind: .counter,
        help: "Commands received since the server started, by command and connection name (closed connections included).")
    public static let outboundCommandsTotal = MetricFamily(
        name: ours + "outbound_commands", kind: .counter,
        help: "Commands sent since the server started, by command and connection name (closed connections included).")
    public static let buildInfo = MetricFamily(
        name: ours + "build_info", kind: .gauge, help: "Always 1: the version and git revision of this build.")
    public static let writerAppends = MetricFamily(
        name: ours + "writer_appends", kind: .counter, help: "Batches (or position advances) stored for writers.")
    public static let writerRejections = MetricFamily(
        name: ours + "writer_rejections", kind: .counter, help: "Writer lines refused with an ERROR.")
    public static let writerResentBatches = MetricFamily(
        name: ours + "writer_resent_batches", kind: .counter,
        help: "Batches a writer sent again that were already stored as sent: acknowledged again, stored once.")
    public static let storageReadErrors = MetricFamily(
        name: ours + "storage_read_errors", kind: .counter,
        help: "Catch-up reads the stream log failed (damaged or unreadable storage); the worker got an ERROR.")
    public static let scrapeDuration = MetricFamily(
        name: ours + "scrape_duration_seconds", kind: .gauge, help: "How long the previous scrape took to render.")
    public static let scrapeErrors = MetricFamily(
        name: ours + "scrape_errors", kind: .counter, help: "Scrapes that failed to collect or render.")
    public static let slowHTTPClientsClosed = MetricFamily(
        name: ours + "http_slow_clients_closed", kind: .counter,
        help: "Metrics endpoint connections closed for not sending their first request's headers in time.")

    // Relay mode (--upstream): the one upstream connection.
    public static let upstreamConnected = MetricFamily(
        name: ours + "upstream_connected", kind: .gauge,
        help: "1 while the relay's upstream connection is up, 0 while it reconnects.")
    public static let upstreamReconnects = MetricFamily(
        name: ours + "upstream_reconnects", kind: .counter, help: "Upstream connections made after the first.")
    public static let upstreamReceivedToken = MetricFamily(
        name: ours + "upstream_received_token", kind: .gauge,
        help: "The last token received from upstream per stream (rows or POSITION).")
    public static let upstreamLagTokens = MetricFamily(
        name: ours + "upstream_lag_tokens", kind: .gauge,
        help: "Last token received from upstream minus the relay's stored head: received but not yet stored.")
    public static let upstreamForwarded = MetricFamily(
        name: ours + "upstream_forwarded_commands", kind: .counter,
        help: "Workers' commands forwarded upstream, by command.")
    public static let upstreamQueued = MetricFamily(
        name: ours + "upstream_queued_commands", kind: .gauge,
        help: "Forwarded commands waiting for the upstream connection to come back.")
    public static let upstreamDropped = MetricFamily(
        name: ours + "upstream_dropped_commands", kind: .counter,
        help: "Forwarded commands dropped because the queue for the upstream was full.")
    public static let upstreamBackfills = MetricFamily(
        name: ours + "upstream_backfills", kind: .counter,
        help: "Requests for rows older than the relay's log, fetched from upstream, by result.")

    // Process metrics, with the standard names.
    public static let processCPU = MetricFamily(
        name: "process_cpu_seconds", kind: .counter, help: "Total user and system CPU time spent in seconds.")
    public static let processResident = MetricFamily(
        name: "process_resident_memory_bytes", kind: .gauge, help: "Resident memory size in bytes.")
    public static let processVirtual = MetricFamily(
        name: "process_virtual_memory_bytes", kind: .gauge, help: "Virtual memory size in bytes.")
    public static let processOpenFDs = MetricFamily(
        name: "process_open_fds", kind: .gauge, help: "Number of open file descriptors.")
    public static let processMaxFDs = MetricFamily(
        name: "process_max_fds", kind: .gauge, help: "Maximum number of open file descriptors.")
    public static let processStart = MetricFamily(
        name: "process_start_time_seconds", kind: .gauge,
        help: "Start time of the process since unix epoch in seconds.")
}
