import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import ReplicationCore
import ReplicationNIO

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish rows as a writer, from JSON lines (the format 'tail' prints).",
        discussion: """
            Reads {"stream": …, "token": …, "row": …} lines from a file or stdin. Consecutive lines with the same \
            stream and token are one batch. Each batch is acknowledged by the server's POSITION before it counts \
            as published; at most --window batches wait for theirs. Progress goes to stderr. When the connection \
            is lost, or the server answers with an ERROR that may pass (it is shutting down, it could not store a \
            batch), it reconnects with back-off (1 s, then e times longer each time, up to 30 s) and sends every \
            batch not yet acknowledged again: the server acknowledges again what it had already stored. Exits 1 \
            with the line number and the server's ERROR text when a row is refused.
            """)

    @Option(help: "HOST:PORT of the replication server.")
    var connect: Endpoint

    @Option(help: "The writer NAME (on the server's --writer list, or in its --writer-credentials file).")
    var name: String

    @Option(help: "File whose first line is the writer's secret, sent with AUTH (for --writer-credentials servers).")
    var passwordFile: String?

    @OptionGroup var transport: ClientTLSOptions

    @Option(help: "The server name to expect in SERVER.")
    var serverName = "localhost"

    @Option(help: "Batches sent ahead of their acknowledgement.")
    var window = 256

    @Argument(help: "File of JSON lines; standard input when omitted.")
    var file: String?

    func validate() throws {
        guard window > 0 else { throw ValidationError("--window must be at least 1, got \(window)") }
        if let file, !FileManager.default.isReadableFile(atPath: file) {
            throw ValidationError("cannot read '\(file)'")
        }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        let configuration = ClientConfiguration(
            host: connect.host, port: connect.port, clientName: name, expectedServerName: serverName,
            subscriptions: [], reconnect: true, secret: try passwordFile.map(readSecret), tls: try transport.context())
        let window = self.window
        let input = file
        let status = try await runClient(configuration) { loop, finish in
            Publisher(window: window, input: input, eventLoop: loop, finish: finish)
        }
        throw ExitCode(status)
    }
}

/// One input line, parsed.
struct InputRow {
    var line: Int
    var stream: StreamName
    var token: Int64
    var row: RowJSON

    static func parse(_ text: String, line: Int) throws -> InputRow {
        func fail(_ why: String) -> ValidationError { ValidationError("line \(line): \(why)") }
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw fail("not a JSON object")
        }
        guard let name = object["stream"] as? String, let stream = StreamName(name) else {
            throw fail("\"stream\" must name a known stream")
        }
        guard let token = (object["token"] as? NSNumber)?.int64Value else { throw fail("\"token\" must be a number") }
        guard let row = object["row"] as? [Any], let data = try? JSONSerialization.data(withJSONObject: row),
            let rowText = String(data: data, encoding: .utf8), let rowJSON = try? RowJSON(validating: rowText)
        else { throw fail("\"row\" must be a JSON array") }
        return InputRow(line: line, stream: stream, token: token, row: rowJSON)
    }
}

/// Feeds batches from a reader thread to the client, keeping at most `window` unacknowledged, and sends
/// those again on every new connection until they are acknowledged.
final class Publisher: ClientDriver {
    private struct Sent {
        var rows: [InputRow]
        var acknowledged = false
        var stream: StreamName { rows[0].stream }
        var token: Int64 { rows[0].token }
        var lastLine: Int { rows[rows.count - 1].line }
    }

    private let window: Window
    private let input: String?
    private let eventLoop: any EventLoop
    private let finish: (Int32) -> Void
    private var inFlight: [Sent] = []
    private var acknowledgedLine = 0
    private var rows = 0
    private var readerStarted = false
    private var readerDone = false
    /// Connected and greeted: batches go out as they are read.
    private var sending = false
    private var finished = false
    private var lastProgress = Date()
    private weak var client: ReplicationClient?

    init(window: Int, input: String?, eventLoop: any EventLoop, finish: @escaping (Int32) -> Void) {
        self.window = Window(slots: window)
        self.input = input
        self.eventLoop = eventLoop
        self.finish = finish
    }

    func attach(_ client: ReplicationClient) { self.client = client }

    func replicationClient(connected: Bool, retryInMillis: Int64?) {
        guard !connected else { return }
        sending = false
        let again = inFlight.first.map { "; sending again from line \($0.rows[0].line)" } ?? ""
        status(
            "connection lost; acknowledged through line \(acknowledgedLine)\(again)"
                + (retryInMillis.map { " in \($0) ms" } ?? ""))
    }

    func replicationClientFinishedConnecting() {
        // Called while the connection is being put in place: send once it is.
        let this = NIOLoopBound(self, eventLoop: eventLoop)
        eventLoop.execute { this.value.connectionReady() }
    }

    /// A new connection: every batch not acknowledged yet goes again, in order, then the input is read on.
    private func connectionReady() {
        guard !finished else { return }
        sending = true
        for batch in inFlight where !batch.acknowledged {
            guard send(batch) else { return }
        }
        guard !readerStarted else { return }
        readerStarted = true
        let loop = eventLoop
        let this = NIOLoopBound(self, eventLoop: loop)
        let window = self.window
        let input = self.input
        Thread.detachNewThread {
            Publisher.read(input, window: window) { event in loop.execute { this.value.handle(event) } }
        }
    }

    /// Sends a batch if connected; false when the connection has gone (it is sent again on the next one).
    private func send(_ batch: Sent) -> Bool {
        guard sending, let client else { return false }
        for (index, row) in batch.rows.enumerated() {
            let token: RowToken = index == batch.rows.count - 1 ? .value(row.token) : .batch
            guard client.sendIfConnected(.rdata(stream: row.stream.rawValue, token: token, row: row.row)) else {
                sending = false
                return false
            }
        }
        return true
    }

    enum ReaderEvent {
        case batch([InputRow])
        case invalid(String)
        case end
    }

    /// Reads the input on its own thread, one batch (same stream and token) at a time.
    private static func read(_ input: String?, window: Window, emit: @escaping (ReaderEvent) -> Void) {
        guard let file = input.map({ fopen($0, "r") }) ?? fdopen(0, "r") else {
            emit(.invalid("cannot read \(input ?? "standard input")"))
            return
        }
        defer { fclose(file) }
        var pending: [InputRow] = []
        var number = 0
        var buffer: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(buffer) }
        while getline(&buffer, &capacity, file) >= 0, let buffer {
            let text = String(cString: buffer).trimmingTrailingNewline
            number += 1
            if text.allSatisfy(\.isWhitespace) { continue }
            let row: InputRow
            do {
                row = try InputRow.parse(text, line: number)
            } catch {
                emit(.invalid("\(error)"))
                return
            }
            if let first = pending.first, first.stream != row.stream || first.token != row.token {
                window.acquire()
                emit(.batch(pending))
                pending = []
            }
            pending.append(row)
        }
        if !pending.isEmpty {
            window.acquire()
            emit(.batch(pending))
        }
        emit(.end)
    }

    private func handle(_ event: ReaderEvent) {
        guard !finished else { return }
        switch event {
        case .invalid(let why):
            stop(1, why)
        case .end:
            readerDone = true
            if inFlight.isEmpty { stop(0, "published \(rows) rows") }
        case .batch(let batch):
            inFlight.append(Sent(rows: batch))
            rows += batch.count
            _ = send(inFlight[inFlight.count - 1])
        }
    }

    func replicationClient(position token: Int64, stream: StreamName) {
        // Acknowledgements are cumulative per stream (a server may send only the newest of several).
        for index in inFlight.indices where inFlight[index].stream == stream && inFlight[index].token <= token {
            inFlight[index].acknowledged = true
        }
        while let first = inFlight.first, first.acknowledged {
            inFlight.removeFirst()
            acknowledgedLine = first.lastLine
            window.release()
        }
        if Date().timeIntervalSince(lastProgress) >= 1 {
            lastProgress = Date()
            status("acknowledged through line \(acknowledgedLine) (\(rows) rows sent)")
        }
        if readerDone && inFlight.isEmpty { stop(0, "published \(rows) rows") }
    }

    func replicationClient(serverError text: String) {
        // The server names the stream and token it refused: find that batch's line.
        let remote = RemoteError(text)
        var refused: Sent?
        switch remote {
        case .writerRejected(let stream, let token), .writerNotStored(let stream, let token):
            refused = inFlight.first { "\($0.stream)" == stream && "\($0.token)" == token }
        default:
            break
        }
        let line = refused?.lastLine ?? inFlight.first?.lastLine ?? acknowledgedLine
        guard remote.isTransient else { return stop(1, "line \(line): the server refused it: \(text)") }
        // The server closes the connection after it: the next one sends this line again.
        status("line \(line): the server could not take it for now: \(text)")
    }

    func replicationClient(closingWithError text: String) { stop(1, text) }
    func replicationClient(trustRefused reason: String) {
        stop(1, "TLS refused: \(reason); check --ca, --cert and --key")
    }
    func replicationClient(received rows: [String], stream: StreamName, token: Int64) {}
    func replicationClient(badRow reason: String, stream: String) {}

    private func stop(_ code: Int32, _ message: String) {
        guard !finished else { return }
        finished = true
        status(message)
        finish(code)
    }

}

extension String {
    fileprivate var trimmingTrailingNewline: String {
        var text = self
        while text.last == "\n" || text.last == "\r" { text.removeLast() }
        return text
    }
}

/// Batches that may be sent ahead of their acknowledgement (a semaphore that may be dropped in use).
final class Window: @unchecked Sendable {
    private let condition = NSCondition()
    private var free: Int

    init(slots: Int) { free = slots }

    func acquire() {
        condition.lock()
        while free == 0 { condition.wait() }
        free -= 1
        condition.unlock()
    }

    func release() {
        condition.lock()
        free += 1
        condition.signal()
        condition.unlock()
    }
}

/// The first line of a password file: the secret itself, never echoed.
func readSecret(_ path: String) throws -> String {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
        throw ValidationError("--password-file: cannot read '\(path)'")
    }
    let secret = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).first.map(String.init) ?? ""
    guard !secret.isEmpty else { throw ValidationError("--password-file: '\(path)' has no secret on its first line") }
    return secret
}
