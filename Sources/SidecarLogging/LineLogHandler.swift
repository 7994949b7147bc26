import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// How log lines are written (`--log-format`).
public enum LogFormat: String, CaseIterable, Sendable {
    /// `ts=… level=info logger=… msg="…" key=value`, as Prometheus and its exporters log.
    case logfmt
    /// One JSON object per line, for log shippers.
    case json
}

/// Log levels under the names operators type: swift-log's, plus `warn` (and `err`) as Prometheus spells them.
public func parseLogLevel(_ text: String) -> Logger.Level? {
    switch text.lowercased() {
    case "warn": .warning
    case "err": .error
    default: Logger.Level(rawValue: text.lowercased())
    }
}

/// A swift-log handler writing one line per message in logfmt or JSON; swift-log itself ships neither.
/// Every value is escaped, control characters included, so that a client-chosen name cannot forge a line.
public struct LineLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let format: LogFormat
    private let write: @Sendable (String) -> Void

    /// `write` receives each line with its newline; by default it goes to standard error.
    public init(
        label: String, format: LogFormat, level: Logger.Level,
        write: @escaping @Sendable (String) -> Void = LineLogHandler.standardError
    ) {
        self.label = label
        self.format = format
        self.logLevel = level
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [(String, String)] = [
            ("ts", Self.timestamp()), ("level", event.level.rawValue), ("logger", label), ("msg", "\(event.message)"),
        ]
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        for key in merged.keys.sorted() { fields.append((key, "\(merged[key]!)")) }
        write(format == .json ? Self.json(fields) : Self.logfmt(fields))
    }

    static func logfmt(_ fields: [(String, String)]) -> String {
        var line = ""
        for (index, (key, value)) in fields.enumerated() {
            if index > 0 { line += " " }
            line += key + "=" + logfmtValue(value)
        }
        return line + "\n"
    }

    /// Bare when it is one plain word, quoted and escaped otherwise.
    static func logfmtValue(_ value: String) -> String {
        let plain =
            !value.isEmpty
            && value.unicodeScalars.allSatisfy {
                $0.value > 0x20 && $0 != "\"" && $0 != "=" && $0 != "\\" && $0.value != 0x7F
            }
        return plain ? value : "\"" + escaped(value) + "\""
    }

    static func json(_ fields: [(String, String)]) -> String {
        "{" + fields.map { "\"\(escaped($0.0))\":\"\(escaped($0.1))\"" }.joined(separator: ",") + "}\n"
    }

    /// JSON string escaping, which logfmt readers accept too.
    static func escaped(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// RFC 3339 in UTC with milliseconds.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(now.tv_nsec / 1_000_000), 3))Z"
    }

    private static let lock = Mutex(())

    /// Whole lines, one writer at a time, unbuffered: nothing is lost when the process is killed.
    @Sendable public static func standardError(_ line: String) {
        lock.withLock { _ in
            var bytes = Array(line.utf8)
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeMutableBytes {
                    Glibc.write(2, $0.baseAddress! + offset, $0.count - offset)
                }
                guard written > 0 else { return }
                offset += written
            }
        }
    }
}
