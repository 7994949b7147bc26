import ArgumentParser
import NIOSSL
import ReplicationNIO
import ReplicationCore

/// `--connect HOST:PORT`, parsed once for `tail` and `publish`.
struct Endpoint: ExpressibleByArgument {
    var host: String
    var port: Int

    init?(argument: String) {
        guard let colon = argument.lastIndex(of: ":"), let port = Int(argument[argument.index(after: colon)...]),
            (1...65535).contains(port), colon != argument.startIndex
        else { return nil }
        self.host = String(argument[..<colon]).trimmingCharacters(in: ["[", "]"])
        self.port = port
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: Set<Character>) -> String {
        String(drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}

/// Parses `--streams events,caches` (or `ALL`) into stream names, with a message naming the bad one.
func parseStreams(_ text: String) throws -> [StreamName] {
    if text == "ALL" || text == "all" { return StreamName.all }
    return try text.split(separator: ",").map { name in
        guard let stream = StreamName(name.trimmingCharacters(in: [" "])) else {
            throw ValidationError(
                "--streams: unknown stream '\(name)'; known: \(StreamName.all.map(\.rawValue).joined(separator: ", "))")
        }
        return stream
    }
}

/// `--tls`, `--ca`, `--cert`, `--key` for `tail` and `publish`: connect to a TLS listener.
struct ClientTLSOptions: ParsableArguments {
    @Flag(help: "Connect over TLS (to the server's --tls-port).")
    var tls = false

    @Option(help: "PEM file of the CA that signed the server's certificate (default: the system's roots).")
    var ca: String?

    @Option(help: "PEM client certificate, for a server started with --tls-client-ca (needs --key).")
    var cert: String?

    @Option(help: "PEM private key of --cert.")
    var key: String?

    func validate() throws {
        guard tls || (ca == nil && cert == nil && key == nil) else {
            throw ValidationError("--ca, --cert and --key need --tls")
        }
        guard (cert == nil) == (key == nil) else { throw ValidationError("--cert and --key go together") }
    }

    /// The context to connect with, or nil for plain TCP.
    func context() throws -> NIOSSLContext? {
        guard tls else { return nil }
        do {
            return try TransportSecurity.clientContext(ca: ca, certificate: cert, key: key)
        } catch {
            throw ValidationError("\(error)")
        }
    }
}
