import Foundation

/// Users and their bcrypt hashes, from `NAME:HASH` lines (what `htpasswd -nB NAME` prints). Blank lines
/// and lines starting with `#` are skipped.
public struct CredentialsFile: Sendable, Equatable {
    public let hashes: [String: PasswordHash]

    public init(hashes: [String: PasswordHash]) { self.hashes = hashes }

    /// Parses the file's text; `source` names it in errors.
    public init(parsing text: String, source: String) throws(CredentialsError) {
        var hashes: [String: PasswordHash] = [:]
        for (index, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            if line.allSatisfy(\.isWhitespace) || line.hasPrefix("#") { continue }
            let location = "\(source) line \(index + 1)"
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                throw CredentialsError("\(location): expected NAME:HASH")
            }
            let name = String(line[..<colon])
            guard hashes[name] == nil else { throw CredentialsError("\(location): \(name) is listed twice") }
            guard let hash = PasswordHash(String(line[line.index(after: colon)...])) else {
                throw CredentialsError(
                    "\(location): the password of \(name) is not a bcrypt hash; store a hash, e.g. the line "
                        + "`htpasswd -nB \(name)` prints")
            }
            hashes[name] = hash
        }
        self.hashes = hashes
    }

    /// Reads and parses the file at `path`.
    public init(contentsOf path: String) throws(CredentialsError) {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw CredentialsError("cannot read \(path)") }
        try self.init(parsing: text, source: path)
    }

    /// Whether `name` is listed and `password` matches its hash (one bcrypt computation when listed).
    public func verify(name: String, password: String) -> Bool {
        hashes[name]?.matches(password) ?? false
    }
}

public struct CredentialsError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
