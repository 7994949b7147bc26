import ReplicationCore
import ReplicationMetrics

/// The page at `/`: what a person checks first. Rendered on the server from one snapshot, refreshed by
/// the browser every few seconds; no script. Every value a client chose (names, addresses) is escaped.
struct StatusPage {
    var connections: [ConnectionSnapshot]
    /// Current token per stream, by ``StreamName/index``.
    var headTokens: [Int64]
    var counters: HubCounters
    /// A relay's upstream address and state; nil for a hub.
    var upstream: (address: String, status: UpstreamStatus)?
    var listening: String
    var telemetryPath: String
    var nowMillis: Int64

    static let refreshSeconds = 5

    func render() -> String {
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="\(Self.refreshSeconds)">
            <title>replication-sidecar</title>
            <style>
            body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}
            table{border-collapse:collapse}th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
            td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.s{max-width:32em}.nw{white-space:nowrap}
            .bad{color:#b00;font-weight:600}.ok{color:#070}
            </style></head><body>
            <h1>replication-sidecar \(BuildInfo.version)</h1>
            <p>Revision \(escape(BuildInfo.revision)) · replication on \(escape(listening)) · \
            <a href="\(escape(telemetryPath))">Metrics</a> · <a href="/healthz">Health</a> · <a href="/readyz">Readiness</a> · \
            refreshes every \(Self.refreshSeconds) s</p>

            """
        if let upstream { html += upstreamSection(address: upstream.address, status: upstream.status) }
        html += connectionsSection() + streamsSection() + "</body></html>\n"
        return html
    }

    private func upstreamSection(address: String, status: UpstreamStatus) -> String {
        let state = status.connected ? "<span class=\"ok\">connected</span>" : "<span class=\"bad\">reconnecting</span>"
        var html = """
            <h2>Upstream</h2>
            <p>\(escape(address)): \(state) · reconnects \(status.reconnects) · commands queued \(status.queuedCommands) \
            · dropped \(status.droppedCommands)</p>

            """
        let received = StreamName.all.compactMap { stream in
            status.receivedTokens[stream.index].map { "\(stream.rawValue) \($0)" }
        }
        if !received.isEmpty { html += "<p>Received up to: \(received.joined(separator: ", "))</p>\n" }
        return html
    }

    private func connectionsSection() -> String {
        let sorted = connections.sorted { ($0.name, $0.peer) < ($1.name, $1.peer) }
        var html = """
            <h2>Connections (\(sorted.count))</h2>
            <table><tr><th>Name</th><th>Address</th><th>Role</th><th>Connected for</th><th>Streams: sent token (lag)</th>\
            <th>Send buffer</th><th>Kernel send queue</th><th>Kernel read queue</th><th>Pending commands</th></tr>

            """
        for connection in sorted {
            let streams = StreamName.all.compactMap { stream -> String? in
                guard let sent = connection.sentTokens[stream.index] else { return nil }
                let lag = max(0, headTokens[stream.index] - sent)
                let lagText = lag > 0 ? "<span class=\"bad\">lag \(lag)</span>" : "lag 0"
                return "<span class=\"nw\">\(stream.rawValue) \(sent) (\(lagText))</span>"
            }
            html += """
                <tr><td>\(escape(connection.name))</td><td>\(escape(connection.peer))</td>\
                <td>\(connection.isWriter ? "writer" : "worker")</td>\
                <td class="n">\(Self.duration(millis: nowMillis - connection.connectedAtMillis))</td>\
                <td class="s">\(streams.isEmpty ? "none" : streams.joined(separator: " "))</td>\
                <td class="n">\(Self.bytes(connection.bufferedWritableBytes))</td>\
                <td class="n">\(Self.bytes(connection.kernelSendQueue))</td>\
                <td class="n">\(Self.bytes(connection.kernelReceiveQueue))</td>\
                <td class="n">\(connection.pendingCommands)</td></tr>

                """
        }
        return html + "</table>\n"
    }

    private func streamsSection() -> String {
        var subscribers = [Int](repeating: 0, count: StreamName.all.count)
        for connection in connections {
            for (index, token) in connection.sentTokens.enumerated() where token != nil { subscribers[index] += 1 }
        }
        var html = """
            <h2>Streams</h2>
            <table><tr><th>Stream</th><th>Head token</th><th>Subscribers</th><th>Rows appended</th></tr>

            """
        for stream in StreamName.all {
            html += """
                <tr><td>\(stream.rawValue)</td><td class="n">\(headTokens[stream.index])</td>\
                <td class="n">\(subscribers[stream.index])</td><td class="n">\(counters.streamUpdates[stream.index])</td></tr>

                """
        }
        return html + "</table>\n"
    }

    /// `3 s`, `4 min 5 s`, `2 h 3 min`, `1 d 2 h`.
    static func duration(millis: Int64) -> String {
        let seconds = max(0, millis / 1000)
        switch seconds {
        case ..<60: return "\(seconds) s"
        case ..<3600: return "\(seconds / 60) min \(seconds % 60) s"
        case ..<86400: return "\(seconds / 3600) h \(seconds % 3600 / 60) min"
        default: return "\(seconds / 86400) d \(seconds % 86400 / 3600) h"
        }
    }

    /// `512 B`, `64.0 KiB`, `3.2 MiB`.
    static func bytes(_ count: Int) -> String {
        if count < 1024 { return "\(count) B" }
        let units = ["KiB", "MiB", "GiB"]
        var value = Double(count) / 1024
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[unit])"
    }

    func escape(_ text: String) -> String { HTMLText.escape(text) }
}
