import ArgumentParser
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
