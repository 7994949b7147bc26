import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Resident memory per idle worker connection: the server's RSS before and after many workers have
/// connected, named themselves and subscribed to two streams, for our sidecar and for Synapse 1.6.1.
struct IdleMemoryBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle-memory", abstract: "Resident memory per idle connection, ours beside Synapse 1.6.1's.")

    @Option(help: "Idle worker connections to open.")
    var workers = 1_000

    @OptionGroup var synapse: SynapseOptions

    func run() throws {
        raiseDescriptorLimit()
        let environment = synapse.environment
        print("resident memory per idle connection, \(workers) workers (NAME, REPLICATE events NOW, REPLICATE caches NOW):")
        let port = try LoopbackSocket.freePort()
        let sidecar = try ServerProcess(
            executable: environment.sidecar,
            arguments: ["serve", "--host", "127.0.0.1", "--port", "\(port)", "--metrics-port", "0", "--in-memory",
                        "--log-level", "error"])
        defer { sidecar.stop() }
        try sidecar.waitUntilListening(port: port)
        let ours = try measure(sidecar, port: port)
        print(ours.report(label: "sidecar"))
        guard !synapse.withoutSynapse else { return }
        let python = try ServerProcess(
            executable: environment.python, arguments: [environment.script("synapse_fanout_server.py"), "0"],
            currentDirectory: synapse.packageRoot)
        defer { python.stop() }
        guard let pythonPort = Int(try python.readLine(startingWith: "PORT ", timeout: 120)) else {
            throw LoopbackSocket.Failure(description: "synapse_fanout_server.py printed no port")
        }
        let theirs = try measure(python, port: pythonPort)
        print(theirs.report(label: "synapse 1.6.1"))
        print(String(format: "  ratio synapse/sidecar: %.1fx the memory per connection", theirs.perConnection / ours.perConnection))
    }

    struct Figures {
        var before: Double
        var after: Double
        var workers: Int
        var perConnection: Double { (after - before) / Double(workers) }

        func report(label: String) -> String {
            "  " + padded(label, 14) + String(format: "%6.1f MiB before, %6.1f MiB after: %5.1f KiB per connection",
                before / 1_048_576, after / 1_048_576, perConnection / 1024)
        }
    }

    private func measure(_ server: ServerProcess, port: Int) throws -> Figures {
        let before = try settledResident(server)
        var sockets: [Int32] = []
        defer { for fd in sockets { close(fd) } }
        for index in 0..<workers {
            let fd = try LoopbackSocket.connect(port: port)
            sockets.append(fd)
            try LoopbackSocket.sendAll(fd, "NAME worker-\(index)\nREPLICATE events NOW\nREPLICATE caches NOW\n")
        }
        // Every worker is subscribed once it has both POSITIONs.
        var buffer = [UInt8](repeating: 0, count: 4096)
        for fd in sockets {
            var scanner = LineScanner()
            var positions = 0
            while positions < 2 {
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard count > 0 else { throw LoopbackSocket.Failure(description: "a worker was disconnected") }
                positions += buffer.withUnsafeBytes { scanner.scan(UnsafeRawBufferPointer(rebasing: $0[..<count])).positions }
            }
        }
        return Figures(before: before, after: try settledResident(server), workers: workers)
    }

    /// The resident size once it has stopped moving (two readings 100 ms apart agree within 64 KiB).
    private func settledResident(_ server: ServerProcess) throws -> Double {
        var previous = server.usage.residentBytes
        for _ in 0..<100 {
            usleep(100_000)
            let current = server.usage.residentBytes
            if abs(current - previous) <= 65_536 { return current }
            previous = current
        }
        return previous
    }
}

func raiseDescriptorLimit() {
    var limit = rlimit()
    getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
}
