import Foundation

/// The repository's root folder, found from this file's path (tests run from their own clone).
public let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The Python of the project's virtual environment (made by `deploy/setup.sh`).
public var projectPython: String { repositoryRoot.appendingPathComponent(".venv/bin/python").path }

public struct ProcessResult: Sendable {
    public var status: Int32
    public var output: String
    public var errors: String
}

/// Runs a program to completion with `input` on its standard input.
public func runProcess(_ executable: String, _ arguments: [String], input: String = "") throws -> ProcessResult {
    ignoreBrokenPipes()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let stdin = Pipe()
    let stdout = Pipe()
    let stderr = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    // Read both pipes while writing, so a chatty program never blocks on a full pipe.
    let group = DispatchGroup()
    let collected = Collected()
    for (pipe, keyPath) in [(stdout, \Collected.output), (stderr, \Collected.errors)] {
        group.enter()
        DispatchQueue.global().async {
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            collected.set(keyPath, data)
            group.leave()
        }
    }
    stdin.fileHandleForWriting.write(Data(input.utf8))
    try stdin.fileHandleForWriting.close()
    process.waitUntilExit()
    group.wait()
    return ProcessResult(
        status: process.terminationStatus, output: String(decoding: collected.output, as: UTF8.self),
        errors: String(decoding: collected.errors, as: UTF8.self))
}

private final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    var output = Data()
    var errors = Data()
    func set(_ keyPath: ReferenceWritableKeyPath<Collected, Data>, _ data: Data) {
        lock.lock()
        self[keyPath: keyPath] = data
        lock.unlock()
    }
}

/// A port that was free a moment ago, for programs that cannot be told to pick one (Prometheus).
public func freePort() throws -> Int {
    let (fd, port) = try loopbackSocket(listening: false)
    close(fd)
    return port
}

/// A TCP socket bound to 127.0.0.1 on a port the kernel picks, listening if asked, and that port.
func loopbackSocket(listening: Bool) throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SocketError(system: "socket") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && (!listening || listen(fd, 16) == 0) && getsockname(fd, $0, &length) == 0
        }
    }
    guard bound else {
        let error = SocketError(system: "bind")
        close(fd)
        throw error
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}
