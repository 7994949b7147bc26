import Foundation
import Logging
import SidecarLogging
import Synchronization
import Testing

/// Lines a handler wrote, kept in memory.
final class CapturedLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }

    func logger(_ format: LogFormat, level: Logger.Level = .info) -> Logger {
        Logger(label: "replication-sidecar") { label in
            LineLogHandler(label: label, format: format, level: level) { line in self.lines.withLock { $0.append(line) }
            }
        }
    }
}

@Suite struct LineLogHandlerTests {
    @Test func logfmtQuotesAndEscapesWhatNeedsIt() throws {
        let captured = CapturedLines()
        captured.logger(.logfmt).info(
            "connection closed",
            metadata: ["port": "9092", "name": "evil\nts=forged level=error", "reason": "ConnectionDone"])
        let line = try #require(captured.all.first)
        #expect(line.hasSuffix("\n") && line.dropLast().allSatisfy { $0 != "\n" })
        #expect(line.hasPrefix("ts="))
        #expect(
            line.contains(
                #" level=info logger=replication-sidecar msg="connection closed" name="evil\nts=forged level=error" port=9092 reason=ConnectionDone"#
            ))
        let timestamp = try #require(line.split(separator: " ").first?.dropFirst(3))
        #expect(timestamp.count == 24 && timestamp.hasSuffix("Z"), "RFC 3339 with milliseconds: \(timestamp)")
    }

    @Test func jsonLinesParseAndKeepEveryField() throws {
        let captured = CapturedLines()
        captured.logger(.json).warning("bad \"line\"", metadata: ["name": "w\u{1}1\t", "port": "9092"])
        let line = try #require(captured.all.first)
        #expect(line.filter { $0 == "\n" }.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
        #expect(object["level"] == "warning")
        #expect(object["logger"] == "replication-sidecar")
        #expect(object["msg"] == "bad \"line\"")
        #expect(object["name"] == "w\u{1}1\t")
        #expect(object["port"] == "9092")
        #expect(line.contains(#""name":"w\u00011\t""#))
    }

    @Test func levelsBelowTheThresholdAreNotWritten() {
        let captured = CapturedLines()
        let logger = captured.logger(.logfmt, level: .warning)
        logger.info("quiet")
        logger.warning("loud")
        #expect(captured.all.count == 1 && captured.all[0].contains("msg=loud"))
    }

    @Test func levelNamesOperatorsType() {
        #expect(parseLogLevel("warn") == .warning)
        #expect(parseLogLevel("warning") == .warning)
        #expect(parseLogLevel("WARN") == .warning)
        #expect(parseLogLevel("err") == .error)
        #expect(parseLogLevel("debug") == .debug)
        #expect(parseLogLevel("verbose") == nil)
    }
}
